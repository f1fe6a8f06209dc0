//! Reading one process's `/proc` files, apart from applying what they say.
//!
//! A read of `/proc/<pid>/maps` takes the process's memory-map lock: when a
//! thread of that process is stuck in a page fault on a hung FUSE or NFS
//! mount, the read waits with it. So the live table has these reads done
//! on loader threads ([`crate::loader`]) and applies the result when it
//! arrives; only tests and replays read in place.

use std::fs;

/// Threads whose names are read per process; past this, the others are
/// named after the process (a process may have any number of threads).
pub const MAX_THREAD_NAMES: usize = 16_384;

/// What `/proc/<pid>` said of one process, unparsed.
#[derive(Debug, Clone, Default)]
pub struct ProcessFiles {
    /// `comm`, as read.
    pub comm: Vec<u8>,
    /// `task/<tid>/comm` of each thread.
    pub threads: Vec<(u32, Vec<u8>)>,
    /// `maps`, as read (bytes: a path need not be UTF-8).
    pub maps: Vec<u8>,
    /// `cgroup`, when it could be read.
    pub cgroup: Option<String>,
}

/// Reads `comm`, the threads' names, `maps` and `cgroup` of `pid` under
/// `root`.
/// `None` if the process is gone (or may not be read).
pub fn read_process(root: &str, pid: u32) -> Option<ProcessFiles> {
    let base = format!("{root}/{pid}");
    let comm = fs::read(format!("{base}/comm")).ok()?;
    let mut threads = Vec::new();
    if let Ok(tasks) = fs::read_dir(format!("{base}/task")) {
        for t in tasks.flatten().take(MAX_THREAD_NAMES) {
            let Some(tid) = t.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            if let Ok(c) = fs::read(t.path().join("comm")) {
                threads.push((tid, c));
            }
        }
    }
    let maps = fs::read(format!("{base}/maps")).unwrap_or_default();
    Some(ProcessFiles {
        comm,
        threads,
        maps,
        cgroup: read_cgroup(root, pid),
    })
}

/// `/proc/<pid>/cgroup` under `root`; `None` if the process is gone.
pub fn read_cgroup(root: &str, pid: u32) -> Option<String> {
    fs::read_to_string(format!("{root}/{pid}/cgroup")).ok()
}

/// The pids listed under `root`.
pub fn list_pids(root: &str) -> Vec<u32> {
    let Ok(dir) = fs::read_dir(root) else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        let files = read_process("/proc", me).expect("own process readable");
        assert!(!files.comm.is_empty());
        assert!(files.threads.iter().any(|(tid, _)| *tid == me));
        assert!(!files.maps.is_empty() && files.cgroup.is_some());
        assert!(read_cgroup("/proc", me).is_some_and(|c| c.contains("::") || c.contains(':')));
        assert!(list_pids("/proc").contains(&me));
        assert!(read_process("/proc", u32::MAX - 1).is_none());
        assert!(read_cgroup("/nonexistent-proc", me).is_none());
    }
}
