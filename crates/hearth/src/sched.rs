//! The sampling thread's share of the CPU.
//!
//! A process on the node can starve Hearth without touching it: thousands
//! of runnable threads share the CPUs with the sampling thread, which then
//! runs too rarely to drain its rings before they overflow. The sampling
//! thread therefore asks for a higher scheduling weight (nice -10, about
//! nine times a default thread's under CFS). It needs little CPU, so this
//! costs the workloads close to nothing; without CAP_SYS_NICE the request
//! fails and sampling runs at the default weight, said once in the log.

/// The nice value asked for the sampling thread.
pub const SAMPLING_NICE: i32 = -10;

/// Gives the calling thread [`SAMPLING_NICE`]; logs once why not if refused.
pub fn raise_sampling_thread() {
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::gettid() };
    let Ok(who) = libc::id_t::try_from(tid) else {
        return;
    };
    // SAFETY: setpriority on this very thread.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, who, SAMPLING_NICE) } != 0 {
        tracing::info!(
            "sampling at the default CPU weight: cannot set nice {SAMPLING_NICE} ({}); \
             with CAP_SYS_NICE, a node crowded with runnable threads drains the rings in time",
            std::io::Error::last_os_error()
        );
    }
}
