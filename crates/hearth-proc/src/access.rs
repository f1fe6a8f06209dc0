//! Whether a process exists, and whether this one may read it.
//!
//! "Does not exist" and "may not be read" need different remedies, and
//! `/proc` alone does not tell them apart: with `hidepid` a process of
//! another user has no `/proc/<pid>` at all, and without it the directory
//! is there but its maps are not readable. `kill(pid, 0)` answers the
//! first question for every process of this pid namespace; reading
//! `/proc/<pid>/maps` (which unwinding needs) answers the second.

use std::io;

/// Why a process cannot be profiled.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error("process {pid} does not exist")]
    NoSuchProcess { pid: u32 },
    #[error(
        "process {pid} exists but is not visible in /proc to this user \
         (/proc mounted with hidepid); run as root, or as the process's user"
    )]
    Hidden { pid: u32 },
    #[error(
        "not permitted to read process {pid}{owner} (/proc/{pid}/maps: {reason}); \
         run as root or as the process's user, or grant CAP_SYS_PTRACE and CAP_PERFMON"
    )]
    Denied {
        pid: u32,
        /// ", owned by uid N", when known.
        owner: String,
        reason: io::Error,
    },
}

/// Checks that `pid` exists and that its memory maps can be read.
pub fn check_readable(proc_root: &str, pid: u32) -> Result<(), AccessError> {
    match std::fs::File::open(format!("{proc_root}/{pid}/maps")) {
        Ok(_) => Ok(()),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EACCES) | Some(libc::EPERM)) => {
            let owner = owner_uid(proc_root, pid)
                .map(|uid| format!(", owned by uid {uid}"))
                .unwrap_or_default();
            Err(AccessError::Denied {
                pid,
                owner,
                reason: e,
            })
        }
        Err(_) if exists(pid) => Err(AccessError::Hidden { pid }),
        Err(_) => Err(AccessError::NoSuchProcess { pid }),
    }
}

/// Whether a process `pid` exists in this pid namespace, visible or not.
fn exists(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    // SAFETY: signal 0 sends nothing; it only checks the pid.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// The real uid of `pid`, from the `Uid:` line of its status file (which
/// every user may read).
fn owner_uid(proc_root: &str, pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("{proc_root}/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_readable_and_an_absent_one_does_not_exist() {
        check_readable("/proc", std::process::id()).unwrap();
        let err = check_readable("/proc", 4_000_000).unwrap_err();
        assert!(matches!(err, AccessError::NoSuchProcess { pid: 4_000_000 }));
        assert_eq!(err.to_string(), "process 4000000 does not exist");
    }

    #[test]
    fn a_live_process_missing_from_proc_is_hidden_not_absent() {
        // A proc root without the process stands for hidepid.
        let err = check_readable("/nonexistent-proc", std::process::id()).unwrap_err();
        assert!(matches!(err, AccessError::Hidden { .. }), "{err}");
    }
}
