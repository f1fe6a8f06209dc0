//! ELF parsing of untrusted or truncated files: the input is written to a
//! file, opened with `Binary::open`, and everything the result offers is
//! exercised. The last 16 bytes of the input double as a mapping address
//! and file offset for `load_bias`.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use hearth_proc::{Binary, SectionRange};
use libfuzzer_sys::fuzz_target;

fn scratch_path() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let shm = PathBuf::from("/dev/shm");
        let dir = if shm.is_dir() {
            shm
        } else {
            std::env::temp_dir()
        };
        dir.join(format!("hearth-fuzz-elf-{}", std::process::id()))
    })
}

fn tail_u64(data: &[u8], from_end: usize) -> u64 {
    let Some(start) = data.len().checked_sub(from_end) else {
        return 0;
    };
    let mut word = [0u8; 8];
    word.copy_from_slice(&data[start..start + 8]);
    u64::from_le_bytes(word)
}

fuzz_target!(|data: &[u8]| {
    let path = scratch_path();
    std::fs::write(path, data).expect("write the scratch file");
    let path_str = path.to_str().expect("UTF-8 temp path");
    let opened = Binary::open(path_str.into(), path_str);
    // The mapping and descriptor stay valid without the name.
    let _ = std::fs::remove_file(path);
    let binary = match opened {
        Ok(b) => b,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    assert_eq!(binary.bytes(), data);
    assert!(binary.fd_path().starts_with("/proc/self/fd/"));
    if let Some(hex) = binary.build_id_hex() {
        assert_eq!(hex.len(), 2 * binary.build_id.as_ref().unwrap().len());
    }
    let s = &binary.sections;
    for range in [
        &s.text,
        &s.eh_frame,
        &s.eh_frame_hdr,
        &s.debug_frame,
        &s.got,
    ]
    .into_iter()
    .flatten()
    {
        assert!(range.file.start <= range.file.end);
        assert!(range.file.end <= data.len(), "section past the end of file");
        assert!(range.svma.start <= range.svma.end);
        let bytes = binary.section_bytes(range);
        assert_eq!(bytes, &data[range.file.clone()]);
    }
    // Ranges that were not produced by this binary must not panic either.
    let a = tail_u64(data, 16) as usize;
    let b = tail_u64(data, 8) as usize;
    for file in [a..b, b..a, 0..a, a..usize::MAX] {
        let bogus = SectionRange { svma: 0..0, file };
        let got = binary.section_bytes(&bogus);
        assert!(got.is_empty() || got == &data[bogus.file.clone()]);
    }
    let (map_start, pgoff) = (a as u64, b as u64);
    let _ = binary.load_bias(map_start, pgoff);
    let _ = binary.load_bias(pgoff, map_start);
    for seg in &binary.segments {
        let _ = binary.load_bias(map_start, seg.offset);
        let _ = binary.load_bias(seg.vaddr, seg.offset);
        let _ = binary.load_bias(u64::MAX, seg.offset.wrapping_add(seg.filesz));
    }
    if binary.segments.iter().any(|s| s.executable) {
        assert!(binary.load_bias(map_start, pgoff).is_some());
    }
});
