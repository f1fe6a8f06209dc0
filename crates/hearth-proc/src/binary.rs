//! ELF binaries opened once and shared by every process that maps them.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{AtomicUsize, Ordering};
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
    #[error("{path} not parsed: {limit} binaries are held already")]
    TooMany { path: String, limit: usize },
    #[error("{path} not read: its file system did not answer another read in time")]
    Unresponsive { path: String },
}

/// The soft limit on this process's open descriptors (1024 if unknown).
pub fn open_file_limit() -> usize {
    // SAFETY: plain-data struct filled in by getrlimit.
    let mut lim: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to a rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return 1024;
    }
    usize::try_from(lim.rlim_cur).unwrap_or(usize::MAX)
}

/// The descriptors one kind of cache may keep open: an eighth of the
/// process's limit, between 16 and 512. The binary cache and the
/// symbolizer (which counts parsed files by build id) each get this much,
/// which leaves most of a low limit (1024
/// in many containers) to the servers, perf events and everything else.
pub fn descriptor_share() -> usize {
    (open_file_limit() / 8).clamp(16, 512)
}

/// Most binaries a [`BinaryCache`] holds at once (each costs a mapping of
/// its file, of the kernel's 65530 per process, and about a kilobyte).
pub const DEFAULT_MAX_BINARIES: usize = 8192;

/// Counts the binaries that keep a descriptor open, against a limit;
/// shared by a cache and the binaries it made, which give their slot back
/// when they are dropped.
#[derive(Debug)]
pub struct DescriptorBudget {
    open: AtomicUsize,
    limit: usize,
}

impl DescriptorBudget {
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(DescriptorBudget {
            open: AtomicUsize::new(0),
            limit,
        })
    }

    /// Descriptors held now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    fn try_take(&self) -> bool {
        self.open
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < self.limit).then_some(n + 1)
            })
            .is_ok()
    }

    fn give_back(&self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }
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

impl UnwindSections {
    /// File bytes of the sections unwinding reads (all but `text`).
    pub fn bytes(&self) -> u64 {
        [
            &self.eh_frame,
            &self.eh_frame_hdr,
            &self.debug_frame,
            &self.got,
        ]
        .into_iter()
        .flatten()
        .map(|r| r.file.len() as u64)
        .sum()
    }
}

/// What a file looked like when it was opened: a file whose size or
/// modification time moved since was written to (or truncated) under its
/// mappings, and its parsed contents are no longer to be trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileStamp {
    pub size: u64,
    pub mtime_ns: i128,
    /// The status change time, which (unlike the modification time) no
    /// process can set back: a rewrite that restores size and mtime still
    /// moves it.
    pub ctime_ns: i128,
}

impl FileStamp {
    fn of(meta: &std::fs::Metadata) -> Self {
        let ns = |s: i64, n: i64| i128::from(s) * 1_000_000_000 + i128::from(n);
        FileStamp {
            size: meta.len(),
            mtime_ns: ns(meta.mtime(), meta.mtime_nsec()),
            ctime_ns: ns(meta.ctime(), meta.ctime_nsec()),
        }
    }
}

/// Sizes of the sections a symbolizer reads and keeps (see
/// [`Binary::symbol_bytes`]).
fn symbol_section_bytes(elf: &ElfFile64<'_, object::LittleEndian>) -> u64 {
    use object::{Object, ObjectSection};
    elf.sections()
        .filter(|s| {
            s.name().is_ok_and(|n| {
                n.starts_with(".debug_")
                    || n.starts_with(".zdebug_")
                    || matches!(n, ".symtab" | ".strtab" | ".dynsym" | ".dynstr")
            })
        })
        .map(|s| match s.compressed_file_range() {
            Ok(c) if c.format != object::CompressionFormat::None => {
                c.uncompressed_size.saturating_add(c.compressed_size)
            }
            _ => s.size(),
        })
        .fold(0u64, u64::saturating_add)
}

/// Where debug files are found by build id, as symbolizers look for them.
const DEBUG_DIRS: [&str; 2] = ["/usr/lib/debug", "/lib/debug"];

/// The symbol bytes of the separate debug file of build id `id` (hex), if
/// there is one: distributions ship debug sections apart, compressed.
fn separate_debug_bytes(id: &str) -> u64 {
    let (Some(dir), Some(rest)) = (id.get(..2), id.get(2..)) else {
        return 0;
    };
    for root in DEBUG_DIRS {
        let Ok(file) = File::open(format!("{root}/.build-id/{dir}/{rest}.debug")) else {
            continue;
        };
        // SAFETY: read-only; a file cut under the mapping reads as zeros
        // (fault_guard), and only section headers are read.
        let Ok(data) = (unsafe { Mmap::map(&file) }) else {
            return 0;
        };
        return ElfFile64::<object::LittleEndian>::parse(&*data)
            .map(|elf| symbol_section_bytes(&elf))
            .unwrap_or(0);
    }
    0
}

/// Largest file parsed. The whole file is mapped: without a cap, files
/// grown to terabytes (a memfd costs nothing until written) would use up
/// the address space. 4 GiB passes the largest debug builds.
pub const MAX_BINARY_BYTES: u64 = 4 << 30;

/// Closes descriptors away from the thread that drops the last reference
/// to a binary (the sampling thread, usually): closing a file on FUSE asks
/// its server, which may never answer.
fn close_elsewhere(file: File) {
    static CLOSER: std::sync::OnceLock<
        Option<std::sync::Mutex<std::sync::mpsc::SyncSender<File>>>,
    > = std::sync::OnceLock::new();
    let closer = CLOSER.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<File>(4096);
        std::thread::Builder::new()
            .name("hearth-closer".into())
            .spawn(move || rx.into_iter().for_each(drop))
            .ok()
            .map(|_| std::sync::Mutex::new(tx))
    });
    let file = match closer {
        Some(tx) => match tx.lock().unwrap_or_else(|e| e.into_inner()).try_send(file) {
            Ok(()) => return,
            Err(
                std::sync::mpsc::TrySendError::Full(f)
                | std::sync::mpsc::TrySendError::Disconnected(f),
            ) => f,
        },
        None => file,
    };
    // No closer thread, or thousands of closes waiting for it: close here.
    drop(file);
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
    /// Device, inode and stamp of the file, hashed: tells files of one path
    /// apart (one per container image, or a rewrite); 0 when unknown.
    identity: u64,
    /// Bytes a symbolizer reads and keeps of this file: see
    /// [`Binary::symbol_bytes`].
    symbol_bytes: u64,
    data: Mmap,
    /// Kept open so the file stays reachable through `/proc/self/fd` after
    /// the process that mapped it is gone, or the file was deleted; only
    /// within the descriptor budget.
    file: Option<File>,
    /// The budget `file` counts against.
    slot: Option<Arc<DescriptorBudget>>,
    /// Without a descriptor: `/proc/self/map_files/...` of this binary's own
    /// mapping, which reaches the file as long as the mapping lives, where
    /// this process may open such paths.
    map_path: Option<String>,
}

impl Drop for Binary {
    fn drop(&mut self) {
        if let Some(file) = self.file.take() {
            close_elsewhere(file);
        }
        if let Some(budget) = self.slot.take() {
            budget.give_back();
        }
    }
}

impl Binary {
    /// Opens and parses `open_path` and keeps its descriptor open. `path` is
    /// how processes name the file.
    pub fn open(path: Arc<str>, open_path: &str) -> Result<Binary, LoadError> {
        Self::open_within(path, open_path, None)
    }

    /// Like [`Binary::open`], keeping the descriptor only if `budget` has
    /// room; otherwise the file stays reachable through this binary's own
    /// mapping (see [`Binary::fd_path`]).
    pub fn open_within(
        path: Arc<str>,
        open_path: &str,
        budget: Option<&Arc<DescriptorBudget>>,
    ) -> Result<Binary, LoadError> {
        let open_err = |source| LoadError::Open {
            path: open_path.to_string(),
            source,
        };
        let file = File::open(open_path).map_err(open_err)?;
        // Taken before mapping: a change after this point shows as a
        // different stamp, never as contents silently trusted.
        let meta = file.metadata().map_err(open_err)?;
        let stamp = FileStamp::of(&meta);
        let identity = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            (meta.dev(), meta.ino(), stamp).hash(&mut h);
            h.finish() | 1
        };
        if stamp.size > MAX_BINARY_BYTES {
            return Err(LoadError::NotElf {
                path: open_path.to_string(),
                reason: format!(
                    "{} bytes, over the {MAX_BINARY_BYTES}-byte limit",
                    stamp.size
                ),
            });
        }
        // SAFETY: the mapping is read-only. The file can still be truncated
        // or rewritten by its owner: every range below is checked against
        // the length at map time, reads of pages that vanished are turned
        // into zeros by `fault_guard`, and `changed` notices the rewrite.
        let data = unsafe { Mmap::map(&file) }.map_err(open_err)?;
        let mut b = Self::parse(path, open_path.into(), data)?;
        b.stamp = Some(stamp);
        b.identity = identity;
        if let Some(id) = b.build_id_hex() {
            // What a symbolizer reads instead of the missing debug sections.
            b.symbol_bytes += separate_debug_bytes(&id);
        }
        match budget {
            Some(budget) if !budget.try_take() => {
                drop(file);
                b.map_path = b.own_mapping_path();
            }
            Some(budget) => {
                b.file = Some(file);
                b.slot = Some(budget.clone());
            }
            None => b.file = Some(file),
        }
        Ok(b)
    }

    /// `/proc/self/map_files/<start>-<end>` of this binary's mapping, if it
    /// can be opened here (it needs CAP_SYS_ADMIN).
    fn own_mapping_path(&self) -> Option<String> {
        // SAFETY: sysconf has no preconditions.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).ok()?;
        let start = self.data.as_ptr() as usize;
        let end = start.checked_add(self.data.len().checked_next_multiple_of(page)?)?;
        let p = format!("/proc/self/map_files/{start:x}-{end:x}");
        File::open(&p).ok().map(|_| p)
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
        let symbol_bytes = symbol_section_bytes(&elf);
        Ok(Binary {
            path,
            open_path,
            build_id,
            segments,
            sections,
            stamp: None,
            identity: 0,
            symbol_bytes,
            data,
            file: None,
            slot: None,
            map_path: None,
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
    /// One `fstat` of the descriptor kept open (a `stat` of the mapping's
    /// path without one; a file that cannot be checked counts as unchanged).
    pub fn changed(&self) -> bool {
        let Some(stamp) = self.stamp else {
            return false;
        };
        match (&self.file, &self.map_path) {
            (Some(f), _) => f
                .metadata()
                .map(|m| FileStamp::of(&m) != stamp)
                .unwrap_or(true),
            // Hearth's own mapping no longer reaches the file (a page that
            // vanished was replaced, splitting it): take it as changed.
            (None, Some(p)) => std::fs::metadata(p)
                .map(|m| FileStamp::of(&m) != stamp)
                .unwrap_or(true),
            (None, None) => false,
        }
    }

    /// Whether this binary keeps a descriptor of its file open.
    pub fn holds_descriptor(&self) -> bool {
        self.file.is_some()
    }

    /// Which file this is, beyond its path (see the field); 0: unknown.
    pub fn identity(&self) -> u64 {
        self.identity
    }

    /// Bytes a symbolizer reads and keeps of this file: its symbol tables
    /// and debug sections (decompressed, as it keeps them, plus the
    /// compressed bytes it maps), and those of a separate debug file found
    /// by build id; its memory bound counts this, not the file's size.
    pub fn symbol_bytes(&self) -> u64 {
        self.symbol_bytes
    }

    /// Size of the file as mapped.
    pub fn file_bytes(&self) -> u64 {
        self.data.len() as u64
    }

    /// Bytes of the sections unwinding reads from this file (the part of
    /// its mapping that stays resident while it is unwound from).
    pub fn unwind_bytes(&self) -> u64 {
        self.sections.bytes()
    }

    /// A path that reaches this very file for as long as this value lives:
    /// its descriptor, else its mapping; as a last resort (no descriptor
    /// left in the budget and no access to map_files) the path it was
    /// opened by, which reaches it while that stays true.
    pub fn fd_path(&self) -> String {
        match (&self.file, &self.map_path) {
            (Some(f), _) => format!("/proc/self/fd/{}", f.as_raw_fd()),
            (None, Some(p)) => p.clone(),
            (None, None) => self.open_path.to_string(),
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

/// The outcome of opening a binary from its candidate paths.
#[derive(Debug)]
pub struct Opened {
    pub result: Result<Binary, LoadError>,
    /// Opened through a path whose inode differs from the mapped one (an
    /// overlay file system's own, usually).
    pub inode_mismatch: bool,
}

/// Opens the first candidate path that works.
///
/// The last candidate is the bare path as this host sees it. A process in
/// another mount namespace may mean another file by it (the agent's own
/// libc for a host process's libc): it is accepted only if it is the very
/// inode the kernel reported. The process's own views before it are
/// trusted even when the inode differs (overlay file systems report their
/// own).
pub fn open_candidates(
    key: &BinaryKey,
    path: &Arc<str>,
    candidates: &[String],
    budget: &Arc<DescriptorBudget>,
) -> Opened {
    let mut last_err = None;
    let mut inode_mismatch = false;
    for (i, candidate) in candidates.iter().enumerate() {
        let host_view = i + 1 == candidates.len() && i > 0;
        if let BinaryKey::Inode {
            major,
            minor,
            inode,
        } = key
        {
            // The host view must be the very file: inode and device. The
            // process's own views may show an overlay's device.
            let same = std::fs::metadata(candidate)
                .map(|m| {
                    m.ino() == *inode && (!host_view || split_dev(m.dev()) == (*major, *minor))
                })
                .unwrap_or(false);
            if host_view && !same {
                last_err = Some(LoadError::Open {
                    path: candidate.clone(),
                    source: io::Error::other("not the mapped file (different inode)"),
                });
                continue;
            }
            inode_mismatch = !same;
        }
        match Binary::open_within(path.clone(), candidate, Some(budget)) {
            Ok(b) => {
                return Opened {
                    result: Ok(b),
                    inode_mismatch,
                }
            }
            Err(e) => last_err = Some(e),
        }
    }
    Opened {
        result: Err(last_err.unwrap_or_else(|| LoadError::Open {
            path: path.to_string(),
            source: io::Error::new(io::ErrorKind::NotFound, "no candidate path"),
        })),
        inode_mismatch: false,
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
    /// Binaries parsed without keeping a descriptor (budget full).
    pub without_descriptor: u64,
    /// Binaries not parsed because the cache held its most already.
    pub over_limit: u64,
}

/// Binaries by identity. Failures are remembered too, so an unreadable
/// file costs one attempt, not one per sample.
///
/// Bounded: at most `max_binaries` entries, and at most the descriptor
/// budget's files kept open; binaries beyond it are parsed and mapped all
/// the same but reach their file through their mapping.
#[derive(Debug)]
pub struct BinaryCache {
    entries: HashMap<BinaryKey, Result<Arc<Binary>, Arc<LoadError>>>,
    /// The vDSO image, copied once (see [`Binary::vdso`]).
    vdso: Option<Result<Arc<Binary>, Arc<LoadError>>>,
    descriptors: Arc<DescriptorBudget>,
    pub max_binaries: usize,
    pub stats: CacheStats,
}

impl Default for BinaryCache {
    fn default() -> Self {
        Self::new()
    }
}

impl BinaryCache {
    /// A cache with the default bounds ([`descriptor_share`] descriptors,
    /// [`DEFAULT_MAX_BINARIES`] binaries).
    pub fn new() -> Self {
        Self::with_limits(descriptor_share(), DEFAULT_MAX_BINARIES)
    }

    pub fn with_limits(descriptors: usize, max_binaries: usize) -> Self {
        BinaryCache {
            entries: HashMap::new(),
            vdso: None,
            descriptors: DescriptorBudget::new(descriptors),
            max_binaries,
            stats: CacheStats::default(),
        }
    }

    /// The descriptors kept open by binaries of this cache (also by those it
    /// already let go that pending windows still hold).
    pub fn descriptors(&self) -> &DescriptorBudget {
        &self.descriptors
    }

    /// Returns the binary for `key`, opening the first candidate path that
    /// works on the first request (here, on the calling thread; see
    /// [`crate::loader`] for opening elsewhere).
    pub fn get(
        &mut self,
        key: &BinaryKey,
        path: &Arc<str>,
        candidates: &[String],
    ) -> Result<Arc<Binary>, Arc<LoadError>> {
        if let Some(entry) = self.entries.get(key) {
            return entry.clone();
        }
        self.check_room(path, 0)?;
        let opened = open_candidates(key, path, candidates, &self.descriptors);
        self.insert(key.clone(), opened)
    }

    /// What is known of `key`: its binary, or why it could not be had.
    pub fn lookup(&self, key: &BinaryKey) -> Option<Result<Arc<Binary>, Arc<LoadError>>> {
        self.entries.get(key).cloned()
    }

    /// Refuses a new binary when the cache (plus `pending` loads) is full.
    /// Not remembered: the next request tries again, and the first one
    /// after the cache shrinks succeeds.
    pub fn check_room(&mut self, path: &str, pending: usize) -> Result<(), Arc<LoadError>> {
        if self.entries.len().saturating_add(pending) >= self.max_binaries {
            self.stats.over_limit += 1;
            return Err(Arc::new(LoadError::TooMany {
                path: path.to_string(),
                limit: self.max_binaries,
            }));
        }
        Ok(())
    }

    /// Records the outcome of opening `key`.
    pub fn insert(
        &mut self,
        key: BinaryKey,
        opened: Opened,
    ) -> Result<Arc<Binary>, Arc<LoadError>> {
        if opened.inode_mismatch {
            self.stats.inode_mismatch += 1;
        }
        let entry = match opened.result {
            Ok(b) => {
                self.stats.loaded += 1;
                if !b.holds_descriptor() {
                    self.stats.without_descriptor += 1;
                }
                Ok(Arc::new(b))
            }
            Err(e) => {
                self.stats.failed += 1;
                Err(Arc::new(e))
            }
        };
        self.entries.insert(key, entry.clone());
        entry
    }

    /// The budget new binaries' descriptors count against.
    pub fn descriptor_budget(&self) -> &Arc<DescriptorBudget> {
        &self.descriptors
    }

    /// Closes binaries that only this cache still holds, and forgets
    /// failures so that they are tried again. Returns how many were dropped.
    pub fn evict_unused(&mut self) -> usize {
        let before = self.entries.len();
        self.entries.retain(|_, entry| match entry {
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

    /// Every parsed file binary held (the vDSO excluded), to check for
    /// changes elsewhere.
    pub fn loaded(&self) -> Vec<(BinaryKey, Arc<Binary>)> {
        self.entries
            .iter()
            .filter_map(|(k, e)| Some((k.clone(), e.as_ref().ok()?.clone())))
            .collect()
    }

    /// Lets a binary go because its file changed (see [`Binary::changed`]).
    pub fn forget_changed(&mut self, key: &BinaryKey) {
        if self.entries.remove(key).is_some() {
            self.stats.changed += 1;
        }
    }

    /// The vDSO image (see [`Binary::vdso`]), loaded on first use.
    pub fn vdso(&mut self) -> Option<Arc<Binary>> {
        // Asked at every exec: kept apart, with no key to build and hash.
        if let Some(entry) = &self.vdso {
            return entry.clone().ok();
        }
        let entry = Binary::vdso().map(Arc::new).map_err(Arc::new);
        match &entry {
            Ok(_) => self.stats.loaded += 1,
            Err(_) => self.stats.failed += 1,
        }
        self.vdso = Some(entry.clone());
        entry.ok()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes of the sections unwinding reads, over the parsed binaries held.
    pub fn unwind_bytes(&self) -> u64 {
        self.entries
            .values()
            .filter_map(|e| e.as_ref().ok())
            .map(|b| b.unwind_bytes())
            .sum()
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
            identity: 0,
            symbol_bytes: 0,
            slot: None,
            map_path: None,
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
        // The right inode on another device is not the mapped file either.
        let meta = std::fs::metadata(&exe).unwrap();
        let (major, minor) = split_dev(meta.dev());
        let key = BinaryKey::Inode {
            major: major + 1,
            minor,
            inode: meta.ino(),
        };
        assert!(cache.get(&key, &exe.as_str().into(), &candidates).is_err());
        // The right inode and device are accepted.
        let key = BinaryKey::Inode {
            major,
            minor,
            inode: meta.ino(),
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

    #[test]
    fn symbol_bytes_count_symbols_and_debug_sections_not_the_file() {
        // This test binary: symbol tables and line tables, and code.
        let exe = std::env::current_exe().unwrap();
        let b = Binary::open("exe".into(), exe.to_str().unwrap()).unwrap();
        assert!(b.symbol_bytes() > 0);
        assert!(b.symbol_bytes() < b.file_bytes(), "{}", b.symbol_bytes());
        // A stripped copy keeps only its dynamic symbols.
        let dir = std::env::temp_dir().join(format!("hearth-symbytes-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let stripped = dir.join("stripped");
        let ok = std::process::Command::new("strip")
            .arg("-o")
            .arg(&stripped)
            .arg(&exe)
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            let s = Binary::open("s".into(), stripped.to_str().unwrap()).unwrap();
            assert!(
                s.symbol_bytes() < b.symbol_bytes() / 4,
                "{}",
                s.symbol_bytes()
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
