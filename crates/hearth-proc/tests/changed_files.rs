//! Files cut short or rewritten under a mapping that Hearth holds: reads
//! see zeros instead of a SIGBUS, and the change is noticed and the file
//! parsed again.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::Arc;

use hearth_proc::table::NewMapping;
use hearth_proc::{fault_guard, Binary, ProcessTable};

struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Dir {
        let p = std::env::temp_dir().join(format!("hearth-proc-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&p).unwrap();
        Dir(p)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A private copy of this test's own executable (an ELF file with unwind
/// sections), which the test may cut and rewrite at will.
fn elf_copy(dir: &Dir, name: &str) -> String {
    let p = dir.0.join(name);
    std::fs::copy(std::env::current_exe().unwrap(), &p).unwrap();
    p.to_str().unwrap().to_string()
}

#[test]
fn reads_of_a_file_truncated_under_its_mapping_see_zeros_not_sigbus() {
    fault_guard::install().expect("install the guard");
    assert!(fault_guard::installed());
    let dir = Dir::new("cut");
    let path = elf_copy(&dir, "cut.elf");
    let b = Binary::open(path.as_str().into(), &path).unwrap();
    let len = b.bytes().len();
    assert!(len > 64 * 1024, "a test binary of {len} bytes");
    let eh = b.sections.eh_frame.clone().expect("eh_frame");
    assert!(b.section_bytes(&eh).iter().any(|&x| x != 0));
    assert!(!b.changed());

    let before = fault_guard::faults();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(4096)
        .unwrap();
    // Every page past the first is gone: without the guard, the first read
    // of one ends this process with SIGBUS.
    let tail = &b.bytes()[len - 16..];
    assert_eq!(tail, &[0u8; 16]);
    let sum: u64 = b.section_bytes(&eh).iter().map(|&x| u64::from(x)).sum();
    assert_eq!(sum, 0, "the vanished eh_frame reads as zeros");
    assert!(fault_guard::faults() > before, "the guard saw the faults");
    assert!(b.changed(), "the truncation is noticed");
}

#[test]
fn a_file_rewritten_in_place_is_noticed() {
    let dir = Dir::new("rewrite");
    let path = elf_copy(&dir, "rewrite.elf");
    let b = Binary::open(path.as_str().into(), &path).unwrap();
    assert!(!b.changed());
    // Same size, new bytes: only the modification time tells.
    std::thread::sleep(std::time::Duration::from_millis(20));
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &[0xcc; 4096], 8192).unwrap();
    drop(f);
    assert!(b.changed());
}

#[test]
fn changed_binaries_are_parsed_again_for_their_mappings() {
    let dir = Dir::new("reload");
    let path = elf_copy(&dir, "reload.elf");
    let meta = std::fs::metadata(&path).unwrap();
    let (major, minor) = hearth_proc::binary::split_dev(meta.dev());
    let mut t = ProcessTable::with_proc_root("/nonexistent-proc");
    t.set_comm(7, 7, b"victim", false);
    let mapping = NewMapping {
        pid: 7,
        start: 0x40_0000,
        len: 0x1000,
        pgoff: 0,
        major,
        minor,
        inode: meta.ino(),
        path: &path,
        path_exact: true,
    };
    t.add_mapping(&mapping);
    let old = t.get(7).unwrap().mappings()[0]
        .binary
        .clone()
        .expect("parsed");
    let generation = t.get(7).unwrap().generation;
    assert_eq!(t.reload_changed_binaries(), 0, "nothing changed yet");

    // Appending changes size and time; the file still parses.
    std::thread::sleep(std::time::Duration::from_millis(20));
    let f = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    std::io::Write::write_all(&mut &f, &[0u8; 100]).unwrap();
    drop(f);
    assert_eq!(t.reload_changed_binaries(), 1);
    let p = t.get(7).unwrap();
    let new = p.mappings()[0].binary.clone().expect("parsed again");
    assert!(!Arc::ptr_eq(&old, &new), "a new parse, not the old one");
    assert_eq!(new.bytes().len(), old.bytes().len() + 100);
    assert!(p.generation > generation, "unwinders rebuild");
    assert_eq!(t.binaries.stats.changed, 1);

    // Cut to nothing: the mapping keeps no binary rather than a stale one.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(0)
        .unwrap();
    assert_eq!(t.reload_changed_binaries(), 1);
    assert!(t.get(7).unwrap().mappings()[0].binary.is_none());
}

/// Only reads past the end of a file are answered: any other SIGBUS (here
/// a misaligned access with x86's alignment check on) still ends the
/// process. Checked in a copy of this test binary.
#[cfg(target_arch = "x86_64")]
#[test]
fn other_sigbus_still_ends_the_process() {
    const CHILD: &str = "HEARTH_FAULT_GUARD_CHILD";
    if std::env::var_os(CHILD).is_some() {
        fault_guard::install().unwrap();
        let words = [0u64; 2];
        let misaligned = (words.as_ptr() as usize + 1) as *const u32;
        // SAFETY: sets EFLAGS.AC, after which the misaligned read below
        // raises SIGBUS (BUS_ADRALN); the read itself is in bounds.
        unsafe {
            std::arch::asm!("pushfq", "or qword ptr [rsp], 0x40000", "popfq");
            std::ptr::read_volatile(misaligned);
        }
        std::process::exit(0);
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "other_sigbus_still_ends_the_process",
            "--nocapture",
        ])
        .env(CHILD, "1")
        .output()
        .unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(out.status.signal(), Some(libc::SIGBUS), "{:?}", out.status);
}
