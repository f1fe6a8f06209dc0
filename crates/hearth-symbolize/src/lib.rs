//! Symbolization: from an [`Aggregate`] of normalized frames to a [`Report`].
//!
//! User frames are `(binary, file offset)` pairs, so they can be resolved
//! from the file alone, long after the process exited. Results are cached
//! by build id (or path when a binary has none) and file offset, so a
//! long-running agent resolves each address once. Kernel frames are looked
//! up in kallsyms. Inlined functions are expanded; Rust and C++ names are
//! demangled.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use blazesym::symbolize::source::{Elf, Source};
use blazesym::symbolize::{Input, Symbolized};
pub mod kallsyms;
pub mod names;
pub mod parsed;

use names::NameCache;
use parsed::ParsedFiles;

use kallsyms::KernelSymbols;

use hearth_profile::{
    Aggregate, BinaryId, BinaryInfo, ContainerKey, Function, Line, Location, Mapping, RawFrame,
    Report, ReportSample, Resource,
};

/// One resolved function at an address, innermost first in a list.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SymbolLine {
    pub name: Arc<str>,
    pub file: Option<Arc<str>>,
    pub line: u32,
}

/// Cache key of a binary: build id when present, else the path and which
/// file it was (two containers may have different files at one path).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum FileKey {
    BuildId(Arc<[u8]>),
    Path(Arc<str>, u64),
    /// A binary that is not opened (see [`BinaryInfo::open_path`]): its
    /// placeholders must not stand for the file once it is.
    Unopened(Arc<str>),
}

fn file_key(info: &BinaryInfo) -> FileKey {
    match (&info.build_id, &info.open_path) {
        (_, None) => FileKey::Unopened(info.path.clone()),
        (Some(id), Some(_)) => FileKey::BuildId(id.clone()),
        (None, Some(_)) => FileKey::Path(info.path.clone(), info.file_id),
    }
}

/// Counters of symbolization, for logs and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SymbolizeStats {
    pub resolved: u64,
    pub unresolved: u64,
    pub cache_hits: u64,
    /// Times a generation of the caches was let go to stay within their
    /// bounds (see [`names`] and [`parsed`]).
    pub resets: u64,
}

/// What the symbolizer holds, in bytes (see [`Symbolizer::memory`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SymbolizerMemory {
    /// Symbol bytes ([`BinaryInfo::symbol_bytes`]) of the files kept
    /// parsed: what the parser reads and keeps of them.
    pub files: u64,
    /// Estimated heap bytes of the resolved addresses kept.
    pub cache: u64,
}

/// Most cached addresses before the caches are emptied (a long-running
/// agent on a machine that keeps running new binaries must not grow).
pub const DEFAULT_CACHE_LIMIT: usize = 250_000;
/// Distinct binaries parsed before the parsed files are let go. Each parsed
/// file also holds a descriptor open: callers with a low descriptor limit
/// set [`Symbolizer::file_limit`] lower.
pub const DEFAULT_FILE_LIMIT: usize = 512;
/// Bytes of files parsed before the parsed files are let go (the agent
/// sets its share of the memory budget instead).
pub const DEFAULT_FILES_BYTE_LIMIT: u64 = 1 << 30;
/// Estimated bytes of cached addresses before the caches are emptied.
pub const DEFAULT_CACHE_BYTE_LIMIT: u64 = 256 << 20;

pub struct Symbolizer {
    /// Read on the first kernel frame, kept until the parsed files rotate.
    kernel_symbols: Option<KernelSymbols>,
    names: NameCache<CacheKey>,
    parsed: ParsedFiles<FileKey>,
    /// Bounds of the resolved addresses and of the files kept parsed (see
    /// [`names`] and [`parsed`]); may be changed between reports.
    pub cache_limit: usize,
    pub file_limit: usize,
    pub files_byte_limit: u64,
    pub cache_byte_limit: u64,
    pub stats: SymbolizeStats,
}

/// What the cache of resolved addresses is keyed by.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum CacheKey {
    User(FileKey, u64),
    Kernel(u64),
}

impl Default for Symbolizer {
    fn default() -> Self {
        Self::new()
    }
}

/// Facts about the recording that the aggregate does not hold.
#[derive(Debug, Clone, Copy, Default)]
pub struct RecordingInfo {
    pub start_unix_ns: u64,
    pub duration_ns: u64,
    pub frequency_hz: u64,
}

fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

fn convert(sym: &blazesym::symbolize::Sym<'_>) -> Vec<SymbolLine> {
    let mut lines = Vec::with_capacity(1 + sym.inlined.len());
    // blazesym lists inlined calls outermost first; we want innermost first.
    for inl in sym.inlined.iter().rev() {
        lines.push(SymbolLine {
            name: Arc::from(&*inl.name),
            file: inl
                .code_info
                .as_ref()
                .map(|c| Arc::from(&*c.to_path().to_string_lossy())),
            line: inl.code_info.as_ref().and_then(|c| c.line).unwrap_or(0),
        });
    }
    lines.push(SymbolLine {
        name: Arc::from(&*sym.name),
        file: sym
            .code_info
            .as_ref()
            .map(|c| Arc::from(&*c.to_path().to_string_lossy())),
        line: sym.code_info.as_ref().and_then(|c| c.line).unwrap_or(0),
    });
    lines
}

fn placeholder(name: String) -> Arc<[SymbolLine]> {
    Arc::from(vec![SymbolLine {
        name: name.into(),
        file: None,
        line: 0,
    }])
}

const KALLSYMS: &str = "/proc/kallsyms";

/// Kernel symbols are C, or Rust (mangled, `_R...`) in kernels with Rust
/// code; the latter are shown demangled, without their hash.
fn demangle_kernel(name: &str) -> String {
    match rustc_demangle::try_demangle(name) {
        Ok(d) => format!("{d:#}"),
        Err(_) => name.to_string(),
    }
}

impl Symbolizer {
    pub fn new() -> Self {
        Symbolizer {
            kernel_symbols: None,
            names: NameCache::new(DEFAULT_CACHE_LIMIT, DEFAULT_CACHE_BYTE_LIMIT),
            parsed: ParsedFiles::new(DEFAULT_FILE_LIMIT, DEFAULT_FILES_BYTE_LIMIT),
            cache_limit: DEFAULT_CACHE_LIMIT,
            file_limit: DEFAULT_FILE_LIMIT,
            files_byte_limit: DEFAULT_FILES_BYTE_LIMIT,
            cache_byte_limit: DEFAULT_CACHE_BYTE_LIMIT,
            stats: SymbolizeStats::default(),
        }
    }

    /// Cached addresses (user and kernel).
    pub fn cached(&self) -> usize {
        self.names.len()
    }

    /// Files kept parsed.
    pub fn parsed_files(&self) -> usize {
        self.parsed.len()
    }

    /// What is held now, in bytes.
    pub fn memory(&self) -> SymbolizerMemory {
        SymbolizerMemory {
            files: self.parsed.bytes(),
            cache: self.names.bytes(),
        }
    }

    /// The bounds as set now.
    fn apply_limits(&mut self) {
        self.names.entry_limit = self.cache_limit;
        self.names.byte_limit = self.cache_byte_limit;
        self.parsed.file_limit = self.file_limit;
        self.parsed.byte_limit = self.files_byte_limit;
    }

    /// Keeps memory bounded between reports (see [`names`], [`parsed`]).
    fn enforce_limits(&mut self) {
        self.apply_limits();
        let before = self.parsed.rotations;
        self.names.rotate();
        self.parsed.trim();
        if self.parsed.rotations != before {
            // Re-read with the next kernel frame: kallsyms changes as
            // modules load.
            self.kernel_symbols = None;
        }
        self.stats.resets = self.names.rotations + self.parsed.rotations;
    }

    fn cache_placeholder(&mut self, key: CacheKey, name: String) {
        self.names.insert(key, &placeholder(name));
    }

    /// Resolves file offsets of one binary, filling the cache.
    fn resolve_user(&mut self, info: &BinaryInfo, offsets: &[u64]) {
        let key = file_key(info);
        let todo: Vec<u64> = offsets
            .iter()
            .copied()
            .filter(|o| !self.names.touch(&CacheKey::User(key.clone(), *o)))
            .collect();
        self.stats.cache_hits += (offsets.len() - todo.len()) as u64;
        if todo.is_empty() {
            return;
        }
        let Some(path) = info.open_path.clone() else {
            // Never opened by the process table: not opened here either.
            for off in todo {
                self.stats.unresolved += 1;
                let name = format!("[unknown] {}+{off:#x}", basename(&info.path));
                self.cache_placeholder(CacheKey::User(key.clone(), off), name);
            }
            return;
        };
        let path = &*path;
        // Parsing one more file may let the older generation of parsed
        // files go (and their descriptors); resolved addresses stay cached.
        let blaze = self.parsed.parser_for(&key, info.symbol_bytes);
        let lookup = |debug_syms: bool| {
            let mut elf = Elf::new(path);
            elf.debug_syms = debug_syms;
            blaze
                .symbolize(&Source::Elf(elf), Input::FileOffset(&todo))
                .unwrap_or_default()
        };
        // DWARF gives inlined frames and lines, but compilers may record
        // only short names there (Rust's line-tables-only debug info says
        // `run` for `app::worker::run`); the symbol table has the full
        // linkage name of the function the address physically belongs to.
        let with_dwarf = lookup(true);
        let with_symtab = lookup(false);
        let mut resolved = Vec::with_capacity(todo.len());
        for (i, off) in todo.iter().enumerate() {
            let symtab = match with_symtab.get(i) {
                Some(Symbolized::Sym(sym)) => Some(sym),
                _ => None,
            };
            let lines = match (with_dwarf.get(i), symtab) {
                (Some(Symbolized::Sym(sym)), _) => {
                    let mut lines = convert(sym);
                    if let (Some(outer), Some(st)) = (lines.last_mut(), symtab) {
                        if st.addr == sym.addr && st.name.len() > outer.name.len() {
                            outer.name = Arc::from(&*st.name);
                        }
                    }
                    Some(lines)
                }
                (_, Some(st)) => Some(convert(st)),
                _ => None,
            };
            resolved.push((*off, lines));
        }
        for (off, lines) in resolved {
            let at = CacheKey::User(key.clone(), off);
            match lines {
                Some(lines) => {
                    self.stats.resolved += 1;
                    self.names.insert(at, &lines);
                }
                None => {
                    self.stats.unresolved += 1;
                    let name = format!("[unknown] {}+{off:#x}", basename(&info.path));
                    self.cache_placeholder(at, name);
                }
            }
        }
    }

    fn resolve_kernel(&mut self, addrs: &[u64]) {
        let todo: Vec<u64> = addrs
            .iter()
            .copied()
            .filter(|a| !self.names.touch(&CacheKey::Kernel(*a)))
            .collect();
        if todo.is_empty() {
            return;
        }
        let symbols = self.kernel_symbols.get_or_insert_with(|| {
            KernelSymbols::load(std::path::Path::new(KALLSYMS)).unwrap_or_else(|e| {
                tracing::warn!("cannot read {KALLSYMS}, kernel frames stay unnamed: {e}");
                KernelSymbols::parse(Vec::new())
            })
        });
        let found: Vec<(u64, Option<String>)> = todo
            .into_iter()
            .map(|addr| (addr, symbols.find(addr).map(|s| demangle_kernel(s.name))))
            .collect();
        for (addr, name) in found {
            match name {
                Some(name) => {
                    self.stats.resolved += 1;
                    let lines = [SymbolLine {
                        name: name.into(),
                        file: None,
                        line: 0,
                    }];
                    self.names.insert(CacheKey::Kernel(addr), &lines);
                }
                None => {
                    self.stats.unresolved += 1;
                    self.cache_placeholder(CacheKey::Kernel(addr), format!("[kernel] {addr:#x}"));
                }
            }
        }
    }

    /// Symbolizes every frame of `agg` and builds the report.
    pub fn report(&mut self, agg: &Aggregate, rec: RecordingInfo) -> Report {
        self.apply_limits();
        // Unique frames, grouped by where they are resolved.
        let mut user: HashMap<BinaryId, BTreeSet<u64>> = HashMap::new();
        let mut kernel: BTreeSet<u64> = BTreeSet::new();
        for key in agg.counts.keys() {
            for frame in agg.stacks.frames(key.stack) {
                match frame {
                    RawFrame::Kernel(a) => {
                        kernel.insert(a);
                    }
                    RawFrame::User {
                        binary,
                        file_offset,
                    } => {
                        user.entry(binary).or_default().insert(file_offset);
                    }
                    RawFrame::Unknown(_) => {}
                }
            }
        }
        for (id, offsets) in &user {
            if let Some(info) = agg.binary_info(*id) {
                let offsets: Vec<u64> = offsets.iter().copied().collect();
                self.resolve_user(info, &offsets);
            }
        }
        let kernel: Vec<u64> = kernel.into_iter().collect();
        self.resolve_kernel(&kernel);

        let mut b = ReportBuilder::default();
        let mut report = Report {
            start_unix_ns: rec.start_unix_ns,
            duration_ns: rec.duration_ns,
            frequency_hz: rec.frequency_hz,
            lost_samples: agg.lost_samples,
            ..Default::default()
        };
        // One resource per container, plus one for the host; attributes
        // beyond the container's own are attached later by the caller.
        let mut resource_index: HashMap<Option<Arc<ContainerKey>>, usize> = HashMap::new();
        // Frames map one-to-one to locations, so each (thread, stack) entry
        // of the aggregate is already a distinct sample.
        for (key, &count) in &agg.counts {
            let stack: Vec<usize> = agg
                .stacks
                .frames(key.stack)
                .map(|f| b.location(self, agg, f))
                .collect();
            let t = &key.thread;
            let resource = *resource_index
                .entry(t.container.clone())
                .or_insert_with(|| {
                    report.resources.push(base_resource(t.container.clone()));
                    report.resources.len() - 1
                });
            b.samples.push(ReportSample {
                stack,
                pid: t.pid,
                tid: t.tid,
                process_name: t.process_name.clone(),
                thread_name: t.thread_name.clone(),
                resource,
                count,
            });
        }
        // Deterministic order helps diffing outputs.
        b.samples
            .sort_by(|a, c| (a.pid, a.tid, &a.stack).cmp(&(c.pid, c.tid, &c.stack)));
        report.mappings = b.mappings;
        report.functions = b.functions;
        report.locations = b.locations;
        report.samples = b.samples;
        // What this report needed beyond the bounds goes now, not at the
        // next report.
        self.enforce_limits();
        report
    }
}

/// The attributes a container's cgroup alone gives.
fn base_resource(container: Option<Arc<ContainerKey>>) -> Resource {
    let mut attributes = Vec::new();
    if let Some(c) = &container {
        attributes.push(("container.id".to_string(), c.id.to_string()));
        if let Some(rt) = &c.runtime {
            attributes.push(("container.runtime.name".to_string(), rt.to_string()));
        }
        if let Some(uid) = &c.pod_uid {
            attributes.push(("k8s.pod.uid".to_string(), uid.to_string()));
        }
    }
    Resource {
        container,
        attributes,
    }
}

#[derive(Default)]
struct ReportBuilder {
    mappings: Vec<Mapping>,
    mapping_index: HashMap<Option<BinaryId>, usize>,
    functions: Vec<Function>,
    function_index: HashMap<(Arc<str>, Option<Arc<str>>), usize>,
    locations: Vec<Location>,
    location_index: HashMap<RawFrame, usize>,
    samples: Vec<ReportSample>,
}

impl ReportBuilder {
    fn mapping(&mut self, agg: &Aggregate, binary: Option<BinaryId>) -> Option<usize> {
        if let Some(&i) = self.mapping_index.get(&binary) {
            return Some(i);
        }
        let m = match binary {
            None => Mapping {
                path: "[kernel.kallsyms]".into(),
                build_id: None,
                kernel: true,
            },
            Some(id) => {
                let info = agg.binary_info(id)?;
                Mapping {
                    path: info.path.clone(),
                    build_id: info
                        .build_id
                        .as_ref()
                        .map(|b| b.iter().map(|x| format!("{x:02x}")).collect()),
                    kernel: false,
                }
            }
        };
        let i = self.mappings.len();
        self.mappings.push(m);
        self.mapping_index.insert(binary, i);
        Some(i)
    }

    fn function(&mut self, line: &SymbolLine) -> usize {
        let key = (line.name.clone(), line.file.clone());
        if let Some(&i) = self.function_index.get(&key) {
            return i;
        }
        let i = self.functions.len();
        self.functions.push(Function {
            name: line.name.clone(),
            file: line.file.clone(),
        });
        self.function_index.insert(key, i);
        i
    }

    fn location(&mut self, sym: &Symbolizer, agg: &Aggregate, frame: RawFrame) -> usize {
        if let Some(&i) = self.location_index.get(&frame) {
            return i;
        }
        let (mapping, address, symbol_lines, kernel) = match frame {
            RawFrame::Kernel(a) => (
                self.mapping(agg, None),
                a,
                sym.names.get(&CacheKey::Kernel(a)).cloned(),
                true,
            ),
            RawFrame::User {
                binary,
                file_offset,
            } => {
                let lines = agg.binary_info(binary).and_then(|info| {
                    sym.names
                        .get(&CacheKey::User(file_key(info), file_offset))
                        .cloned()
                });
                (self.mapping(agg, Some(binary)), file_offset, lines, false)
            }
            RawFrame::Unknown(a) => (None, a, None, false),
        };
        let symbol_lines =
            symbol_lines.unwrap_or_else(|| placeholder(format!("[unknown] {address:#x}")));
        let lines = symbol_lines
            .iter()
            .map(|l| Line {
                function: self.function(l),
                line: l.line,
            })
            .collect();
        let i = self.locations.len();
        self.locations.push(Location {
            mapping,
            address,
            lines,
            kernel,
        });
        self.location_index.insert(frame, i);
        i
    }
}
