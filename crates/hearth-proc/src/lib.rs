//! What the profiler knows about processes and the files they execute.
//!
//! * [`access`]: whether a process exists and may be read, told apart so
//!   that each gets its own remedy.
//! * [`container`]: which container (and Kubernetes pod) a process runs
//!   in, from `/proc/<pid>/cgroup`, with a per-pid cache.
//! * [`procfs`]: parsers of `/proc/<pid>/maps`, `comm` and `status`; their
//!   input is outside data, so they never panic and are fuzzed.
//! * [`binary`]: ELF files opened once and shared, keyed by device and
//!   inode: build id, loadable segments and the sections unwinding needs.
//! * [`fault_guard`]: a `SIGBUS` handler that turns reads of mapped files
//!   cut short by their owners into zeros instead of a crash.
//! * [`loader`]: threads that open, parse and check binaries and read
//!   other processes' `/proc` files, so that no file operation (a hung
//!   network mount) reaches the sampling thread.
//! * [`proc_read`]: those `/proc` reads, apart from applying them.
//! * [`table`]: the live process table, kept current from the kernel's
//!   mmap/comm/fork/exit records after an initial `/proc` scan.

pub mod access;
pub mod binary;
pub mod container;
pub mod fault_guard;
pub mod loader;
pub mod proc_read;
pub mod procfs;
pub mod table;

pub use binary::{Binary, BinaryCache, BinaryKey, LoadError, SectionRange};
pub use container::{
    classify_cgroup, Classification, ContainerCache, ContainerRef, QosClass, Runtime,
};
pub use table::{CgroupRead, Mapping, Process, ProcessTable, TableStats};
