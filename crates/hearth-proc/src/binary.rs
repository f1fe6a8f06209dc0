//! ELF binaries opened once and shared by every process that maps them.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::sync::Arc;

use memmap2::Mmap;
use object::elf::PT_LOAD;
use object::read::elf::{ElfFile64, FileHeader, ProgramHeader};
use object::{Object, ObjectSection};

/// Identity of a file on this host: device and inode as the kernel reports
/// them in mmap records, or the path when no inode is known.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum BinaryKey {
    Inode { major: u32, minor: u32, inode: u64 },
    Path(Arc<str>),
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot open {path}: {source}")]
    Open { path: String, source: io::Error },
    #[error("{path} is not a 64-bit little-endian ELF file: {reason}")]
    NotElf { path: String, reason: String },
}

/// A section's address range (SVMA) and where its bytes are in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SectionRange {
    pub svma: Range<u64>,
    pub file: Range<usize>,
}

/// A `PT_LOAD` program header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub vaddr: u64,
    pub offset: u64,
    pub filesz: u64,
    pub executable: bool,
}

/// The sections DWARF unwinding reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnwindSections {
    pub text: Option<SectionRange>,
    pub eh_frame: Option<SectionRange>,
    pub eh_frame_hdr: Option<SectionRange>,
    pub debug_frame: Option<SectionRange>,
    pub got: Option<SectionRange>,
}

/// What a file looked like when it was opened: a file whose size or
/// modification time moved since was written to (or truncated) under its
/// mappings, and its parsed contents are no longer to be trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStamp {
    pub size: u64,
    pub mtime_ns: i128,
}

impl FileStamp {
    fn of(meta: &std::fs::Metadata) -> Self {
        FileStamp {
            size: meta.len(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
        }
    }
}

/// A parsed ELF file. The bytes stay memory-mapped; sections are ranges.
///
/// The file belongs to another process, which may truncate or rewrite it
/// at any time: reads of pages that vanished see zeros rather than fault
/// once [`crate::fault_guard`] is installed, every parser of these bytes
/// accepts garbage, and [`Binary::changed`] tells the owner to reload.
#[derive(Debug)]
pub struct Binary {
    /// The path the process used.
    pub path: Arc<str>,
    /// The path this host opened (through `/proc/<pid>/root` for processes
    /// in other mount namespaces).
    pub open_path: Arc<str>,
    pub build_id: Option<Arc<[u8]>>,
    pub segments: Vec<Segment>,
    pub sections: UnwindSections,
    /// The file as it was parsed; `None` for images that cannot change.
    stamp: Option<FileStamp>,
    data: Mmap,
    /// Kept open so the file stays reachable through `/proc/self/fd` after
    /// the process that mapped it is gone, or the file was deleted.
    file: Option<File>,
}

impl Binary {
    /// Opens and parses `open_path`. `path` is how processes name the file.
    pub fn open(path: Arc<str>, open_path: &str) -> Result<Binary, LoadError> {
        let open_err = |source| LoadError::Open {
            path: open_path.to_string(),
            source,
        };
        let file = File::open(open_path).map_err(open_err)?;
        // Taken before mapping: a change after this point shows as a
        // different stamp, never as contents silently trusted.
        let stamp = FileStamp::of(&file.metadata().map_err(open_err)?);
        // SAFETY: the mapping is read-only. The file can still be truncated
        // or rewritten by its owner: every range below is checked against
        // the length at map time, reads of pages that vanished are turned
        // into zeros by `fault_guard`, and `changed` notices the rewrite.
        let data = unsafe { Mmap::map(&file) }.map_err(open_err)?;
        let mut b = Self::parse(path, open_path.into(), data)?;
        b.file = Some(file);
        b.stamp = Some(stamp);
        Ok(b)
    }

    fn parse(path: Arc<str>, open_path: Arc<str>, data: Mmap) -> Result<Binary, LoadError> {
        let not_elf = |reason: String| LoadError::NotElf {
            path: open_path.to_string(),
            reason,
        };
        let elf =
            ElfFile64::<object::LittleEndian>::parse(&*data).map_err(|e| not_elf(e.to_string()))?;
        let endian = elf.endian();
        let mut segments = Vec::new();
        let headers = elf
            .elf_header()
            .program_headers(endian, &*data)
            .map_err(|e| not_elf(e.to_string()))?;
        for ph in headers {
            if ph.p_type(endian) == PT_LOAD {
                segments.push(Segment {
                    vaddr: ph.p_vaddr(endian),
                    offset: ph.p_offset(endian),
                    filesz: ph.p_filesz(endian),
                    executable: ph.p_flags(endian) & object::elf::PF_X != 0,
                });
            }
        }
        let len = data.len();
        let range = |name: &str| -> Option<SectionRange> {
            let s = elf.section_by_name(name)?;
            let (off, size) = s.file_range()?;
            let start = usize::try_from(off).ok()?;
            let end = start.checked_add(usize::try_from(size).ok()?)?;
            if end > len {
                return None;
            }
            Some(SectionRange {
                svma: s.address()..s.address().checked_add(s.size())?,
                file: start..end,
            })
        };
        let sections = UnwindSections {
            text: range(".text"),
            eh_frame: range(".eh_frame"),
            eh_frame_hdr: range(".eh_frame_hdr"),
            debug_frame: range(".debug_frame"),
            got: range(".got"),
        };
        let build_id = elf.build_id().ok().flatten().map(Arc::from);
        Ok(Binary {
            path,
            open_path,
            build_id,
            segments,
            sections,
            stamp: None,
            data,
            file: None,
        })
    }

    /// The kernel's vDSO, copied from this process's own mapping into an
    /// anonymous memory file. Every 64-bit process maps the same image, so
    /// one copy serves to unwind and symbolize them all.
    pub fn vdso() -> Result<Binary, LoadError> {
        let err = |reason: &str| LoadError::NotElf {
            path: "[vdso]".into(),
            reason: reason.into(),
        };
        let maps =
            std::fs::read_to_string("/proc/self/maps").map_err(|source| LoadError::Open {
                path: "/proc/self/maps".into(),
                source,
            })?;
        let entry = crate::procfs::parse_maps(&maps)
            .into_iter()
            .flatten()
            .find(|e| e.path == "[vdso]")
            .ok_or_else(|| err("this process has no vDSO mapping"))?;
        let len = usize::try_from(entry.end - entry.start).map_err(|_| err("huge vDSO"))?;
        // SAFETY: the range is this process's vDSO mapping, readable and
        // mapped for the whole life of the process.
        let image = unsafe { std::slice::from_raw_parts(entry.start as *const u8, len) };
        // SAFETY: memfd_create with a valid NUL-terminated name.
        let fd = unsafe { libc::memfd_create(c"hearth-vdso".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(LoadError::Open {
                path: "memfd".into(),
                source: io::Error::last_os_error(),
            });
        }
        // SAFETY: fd was just created and is owned by nobody else.
        let mut file = unsafe { <File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        io::Write::write_all(&mut file, image).map_err(|source| LoadError::Open {
            path: "memfd".into(),
            source,
        })?;
        // SAFETY: read-only mapping of a file only this process can write.
        let data = unsafe { Mmap::map(&file) }.map_err(|source| LoadError::Open {
            path: "memfd".into(),
            source,
        })?;
        let mut b = Self::parse("[vdso]".into(), "[vdso]".into(), data)?;
        b.file = Some(file);
        Ok(b)
    }

    /// Whether the file was truncated or written since it was parsed (its
    /// size or modification time moved), or cannot be checked any more.
    /// One `fstat` of the descriptor kept open.
    pub fn changed(&self) -> bool {
        match (&self.file, self.stamp) {
            (Some(f), Some(stamp)) => f
                .metadata()
                .map(|m| FileStamp::of(&m) != stamp)
                .unwrap_or(true),
            _ => false,
        }
    }

    /// A path that reaches this very file for as long as this value lives.
    pub fn fd_path(&self) -> String {
        match &self.file {
            Some(f) => format!("/proc/self/fd/{}", f.as_raw_fd()),
            None => self.open_path.to_string(),
        }
    }

    /// The whole file.
    pub fn bytes(&self) -> &[u8] {
        &self.data
    }

    /// Bytes of a section range produced by this binary.
    pub fn section_bytes(&self, r: &SectionRange) -> &[u8] {
        self.data.get(r.file.clone()).unwrap_or(&[])
    }

    /// Load bias of a mapping of this file at `map_start` from file offset
    /// `pgoff`: the value to add to an SVMA to get the runtime address.
    ///
    /// Uses the segment containing `pgoff`: linkers such as lld place
    /// segments whose address and file offset differ, so the bias is
    /// `map_start - pgoff - (p_vaddr - p_offset)` of that segment.
    pub fn load_bias(&self, map_start: u64, pgoff: u64) -> Option<u64> {
        // Only executable mappings are tracked, so prefer an executable
        // segment: with lld, the read-only segment before it can share the
        // mapping's first page.
        let contains = |s: &&Segment| {
            let page_start = s.offset & !0xfff;
            pgoff >= page_start && pgoff < s.offset.saturating_add(s.filesz.max(1))
        };
        let seg = self
            .segments
            .iter()
            .filter(|s| s.executable)
            .find(contains)
            .or_else(|| self.segments.iter().find(contains))
            .or_else(|| self.segments.iter().find(|s| s.executable))?;
        Some(
            map_start
                .wrapping_sub(pgoff)
                .wrapping_sub(seg.vaddr.wrapping_sub(seg.offset)),
        )
    }

    pub fn build_id_hex(&self) -> Option<String> {
        self.build_id
            .as_ref()
            .map(|b| b.iter().map(|x| format!("{x:02x}")).collect())
    }
}

/// Device number as `(major, minor)` from a `st_dev` value.
pub fn split_dev(dev: u64) -> (u32, u32) {
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    (major as u32, minor as u32)
}

/// Counters of what the cache did, for logs and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub loaded: u64,
    pub failed: u64,
    pub inode_mismatch: u64,
    /// Binaries let go because their file changed after it was parsed.
    pub changed: u64,
}

/// Binaries by identity. Failures are remembered too, so an unreadable
/// file costs one attempt, not one per sample.
#[derive(Debug, Default)]
pub struct BinaryCache {
    entries: HashMap<BinaryKey, Result<Arc<Binary>, Arc<LoadError>>>,
    pub stats: CacheStats,
}

impl BinaryCache {
    pub fn new() -> Self {
        Self::default()
    }

    /// Returns the binary for `key`, opening the first candidate path that
    /// works on the first request.
    pub fn get(
        &mut self,
        key: &BinaryKey,
        path: &Arc<str>,
        candidates: &[String],
    ) -> Result<Arc<Binary>, Arc<LoadError>> {
        if let Some(entry) = self.entries.get(key) {
            return entry.clone();
        }
        let mut last_err = None;
        let mut result = None;
        for (i, candidate) in candidates.iter().enumerate() {
            // The last candidate is the bare path as this host sees it. A
            // process in another mount namespace may mean another file by
            // it (the agent's own libc for a host process's libc): accept
            // it only if it is the very inode the kernel reported. The
            // process's own views before it are trusted even when the
            // inode differs (overlay file systems report their own).
            let host_view = i + 1 == candidates.len() && i > 0;
            if let BinaryKey::Inode { inode, .. } = key {
                let same = std::fs::metadata(candidate)
                    .map(|m| m.ino() == *inode)
                    .unwrap_or(false);
                if host_view && !same {
                    last_err = Some(LoadError::Open {
                        path: candidate.clone(),
                        source: io::Error::other("not the mapped file (different inode)"),
                    });
                    continue;
                }
                if !same {
                    self.stats.inode_mismatch += 1;
                }
            }
            match Binary::open(path.clone(), candidate) {
                Ok(b) => {
                    result = Some(Arc::new(b));
                    break;
                }
                Err(e) => last_err = Some(e),
            }
        }
        let entry = match result {
            Some(b) => {
                self.stats.loaded += 1;
                Ok(b)
            }
            None => {
                self.stats.failed += 1;
                Err(Arc::new(last_err.unwrap_or_else(|| LoadError::Open {
                    path: path.to_string(),
                    source: io::Error::new(io::ErrorKind::NotFound, "no candidate path"),
                })))
            }
        };
        self.entries.insert(key.clone(), entry.clone());
        entry
    }

    /// Closes binaries that only this cache still holds, and forgets
    /// failures so that they are tried again. Returns how many were dropped.
    pub fn evict_unused(&mut self) -> usize {
        let before = self.entries.len();
        self.entries.retain(|key, entry| match entry {
            // The vDSO is shared by everything and cheap: keep it.
            _ if matches!(key, BinaryKey::Path(p) if &**p == "[vdso]") => true,
            Ok(b) => Arc::strong_count(b) > 1,
            Err(_) => false,
        });
        before - self.entries.len()
    }

    /// Takes out of the cache every binary whose file changed since it was
    /// parsed (see [`Binary::changed`]), and returns them with their keys:
    /// the next request for such a key parses the file as it is now.
    pub fn take_changed(&mut self) -> Vec<(BinaryKey, Arc<Binary>)> {
        let changed: Vec<BinaryKey> = self
            .entries
            .iter()
            .filter(|(_, e)| e.as_ref().is_ok_and(|b| b.changed()))
            .map(|(k, _)| k.clone())
            .collect();
        let mut out = Vec::with_capacity(changed.len());
        for key in changed {
            if let Some(Ok(b)) = self.entries.remove(&key) {
                self.stats.changed += 1;
                out.push((key, b));
            }
        }
        out
    }

    /// The vDSO image (see [`Binary::vdso`]), loaded on first use.
    pub fn vdso(&mut self) -> Option<Arc<Binary>> {
        let key = BinaryKey::Path("[vdso]".into());
        if let Some(entry) = self.entries.get(&key) {
            return entry.clone().ok();
        }
        let entry = Binary::vdso().map(Arc::new).map_err(Arc::new);
        match &entry {
            Ok(_) => self.stats.loaded += 1,
            Err(_) => self.stats.failed += 1,
        }
        self.entries.insert(key, entry.clone());
        entry.ok()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_executable_parses_with_unwind_sections() {
        let exe = std::env::current_exe().unwrap();
        let exe = exe.to_str().unwrap();
        let b = Binary::open(exe.into(), exe).unwrap();
        assert!(b.sections.eh_frame.is_some());
        assert!(b.sections.text.is_some());
        assert!(b.segments.iter().any(|s| s.executable));
    }

    #[test]
    fn truncated_and_non_elf_files_are_errors() {
        let dir = std::env::temp_dir().join(format!("hearth-proc-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let exe = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        for (name, bytes) in [
            ("empty", &exe[..0]),
            ("header", &exe[..40]),
            ("half-header", &exe[..70]),
            ("text", &b"#!/bin/sh\necho hi\n"[..]),
        ] {
            let p = dir.join(name);
            std::fs::write(&p, bytes).unwrap();
            let p = p.to_str().unwrap();
            assert!(Binary::open(p.into(), p).is_err(), "{name} parsed");
        }
        // A file cut after the headers parses, but sections past the end
        // are dropped rather than read out of bounds.
        let p = dir.join("cut");
        std::fs::write(&p, &exe[..4096]).unwrap();
        let p = p.to_str().unwrap();
        if let Ok(b) = Binary::open(p.into(), p) {
            for r in [&b.sections.eh_frame, &b.sections.text]
                .into_iter()
                .flatten()
            {
                assert!(r.file.end <= 4096);
            }
        }
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn load_bias_uses_the_segment_of_the_mapping() {
        let b = Binary {
            path: "x".into(),
            open_path: "x".into(),
            build_id: None,
            // An lld-style layout: text at vaddr 0x2000 + 0x1000 * k but file offset 0x1000.
            segments: vec![
                Segment {
                    vaddr: 0,
                    offset: 0,
                    filesz: 0x1000,
                    executable: false,
                },
                Segment {
                    vaddr: 0x2100,
                    offset: 0x1100,
                    filesz: 0x3000,
                    executable: true,
                },
            ],
            sections: UnwindSections::default(),
            stamp: None,
            data: memmap2::MmapOptions::new()
                .len(1)
                .map_anon()
                .unwrap()
                .make_read_only()
                .unwrap(),
            file: None,
        };
        // Mapped at 0x5555_1000 from file offset 0x1000: svma 0x2100 lives at 0x5555_1100.
        let bias = b.load_bias(0x5555_1000, 0x1000).unwrap();
        assert_eq!(0x2100 + bias, 0x5555_1100);
    }

    #[test]
    fn vdso_image_parses_and_has_clock_gettime_unwind_info() {
        let v = Binary::vdso().expect("vdso");
        assert!(v.sections.eh_frame.is_some() || v.sections.eh_frame_hdr.is_some());
        assert!(v.segments.iter().any(|s| s.executable));
        assert!(std::fs::metadata(v.fd_path()).is_ok());
    }

    #[test]
    fn host_path_with_another_inode_is_not_used() {
        let exe = std::env::current_exe().unwrap();
        let exe = exe.to_str().unwrap().to_string();
        let mut cache = BinaryCache::new();
        let key = BinaryKey::Inode {
            major: 0,
            minor: 0,
            inode: 1,
        };
        let candidates = vec!["/nonexistent/map_files/1-2".to_string(), exe.clone()];
        assert!(cache.get(&key, &exe.as_str().into(), &candidates).is_err());
        // The right inode is accepted.
        let ino = std::fs::metadata(&exe).unwrap().ino();
        let key = BinaryKey::Inode {
            major: 0,
            minor: 0,
            inode: ino,
        };
        assert!(cache.get(&key, &exe.as_str().into(), &candidates).is_ok());
    }

    #[test]
    fn unused_binaries_are_evicted_and_used_ones_kept() {
        let exe = std::env::current_exe().unwrap();
        let exe = exe.to_str().unwrap().to_string();
        let mut cache = BinaryCache::new();
        let one = std::slice::from_ref(&exe);
        let held = cache
            .get(&BinaryKey::Path("a".into()), &exe.as_str().into(), one)
            .unwrap();
        let _ = cache
            .get(&BinaryKey::Path("b".into()), &exe.as_str().into(), one)
            .unwrap();
        let _ = cache.get(
            &BinaryKey::Path("c".into()),
            &exe.as_str().into(),
            &["/nonexistent".to_string()],
        );
        assert_eq!(cache.len(), 3);
        assert_eq!(
            cache.evict_unused(),
            2,
            "the unused binary and the failure go"
        );
        assert_eq!(cache.len(), 1);
        drop(held);
        assert_eq!(cache.evict_unused(), 1);
    }

    #[test]
    fn dev_numbers_split() {
        // makedev(8, 1) and makedev(259, 70000)
        assert_eq!(split_dev((8 << 8) | 1), (8, 1));
        let dev: u64 = ((259u64 & 0xfff) << 8) | ((70000u64 & 0xff) | ((70000u64 & !0xff) << 12));
        assert_eq!(split_dev(dev), (259, 70000));
    }
}
