//! Normalized frames: addresses that stay meaningful after a process exits.

use std::sync::Arc;

/// Index of a binary in an [`crate::Aggregate`]'s binary table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BinaryId(pub u32);

/// A frame as the sampling thread records it.
///
/// User addresses are stored as file offsets inside their binary, so that the
/// symbolizer can work from the file alone, even once the process is gone.
/// Return addresses are already adjusted to point inside the call instruction
/// (address minus one), so every frame is a lookup address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RawFrame {
    /// A kernel text address, resolved through kallsyms.
    Kernel(u64),
    /// A user address inside a file-backed executable mapping.
    User { binary: BinaryId, file_offset: u64 },
    /// A user address that no known mapping covers (JIT code, anonymous
    /// executable memory, or a mapping we did not learn about in time).
    Unknown(u64),
}

impl RawFrame {
    pub fn is_kernel(&self) -> bool {
        matches!(self, RawFrame::Kernel(_))
    }
}

/// What the symbolizer needs to know of a binary.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BinaryInfo {
    /// Path as the process saw it (inside its mount namespace).
    pub path: Arc<str>,
    /// Path through which this host can open the same file (for example
    /// `/proc/self/fd/<n>` of a descriptor kept while the process was
    /// alive). `None`: the file could not be opened, or not in time, and is
    /// not opened later either: `path` may name another file on this host,
    /// or one on a file system that does not answer.
    pub open_path: Option<Arc<str>>,
    /// GNU build id, raw bytes.
    pub build_id: Option<Arc<[u8]>>,
    /// What the symbolizer reads and keeps of the file (symbol tables, debug
    /// sections decompressed, a separate debug file's), which its memory
    /// bound counts (0: unknown).
    pub symbol_bytes: u64,
    /// Tells apart files of the same path when there is no build id (one
    /// per container image, or a file rewritten): 0 when unknown.
    pub file_id: u64,
}

/// The container a process runs in, as its cgroup path tells.
///
/// Carried with every sample so that Kubernetes metadata can be attached
/// when a window is reported, even if the pod became known only after the
/// sample was taken.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContainerKey {
    /// Bare container id (64 hex).
    pub id: Arc<str>,
    /// `containerd`, `cri-o`, `docker`, `podman`, when the path tells.
    pub runtime: Option<Arc<str>>,
    /// Pod UID (or a static pod's config hash) from the cgroup path.
    pub pod_uid: Option<Arc<str>>,
}
