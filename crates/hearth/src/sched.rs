//! The CPU weight of Hearth's latency-bound threads.
//!
//! A process on the node can starve Hearth without touching it: thousands
//! of runnable threads share the CPUs with the sampling thread, which then
//! runs too rarely to drain its rings before they overflow, and with the
//! I/O thread, whose `/healthz` answers then come late. Those two threads
//! therefore ask for a higher scheduling weight (nice -10, about nine times
//! a default thread's under CFS). They need little CPU, so this costs the
//! workloads close to nothing; so do the loader threads, which parse only
//! ELF headers. The reporter (symbolization) and the page's query threads
//! keep the default weight. Without CAP_SYS_NICE the request
//! fails and they run at the default weight, said once in the log.

use std::sync::Once;

/// The nice value asked for the sampling and I/O threads.
pub const LATENCY_NICE: i32 = -10;

/// Gives the calling thread [`LATENCY_NICE`]; logs once why not if refused.
pub fn raise_current_thread() {
    static REFUSED: Once = Once::new();
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::gettid() };
    let Ok(who) = libc::id_t::try_from(tid) else {
        return;
    };
    // SAFETY: setpriority on this very thread.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, who, LATENCY_NICE) } != 0 {
        let e = std::io::Error::last_os_error();
        REFUSED.call_once(|| {
            tracing::info!(
                "sampling and serving at the default CPU weight: cannot set nice \
                 {LATENCY_NICE} ({e}); with CAP_SYS_NICE, a node crowded with runnable \
                 threads cannot delay them"
            )
        });
    }
}

/// Gives the calling thread the default weight (nice 0), whatever it
/// inherited from the thread that started it.
pub fn reset_current_thread() {
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::gettid() };
    if let Ok(who) = libc::id_t::try_from(tid) {
        // SAFETY: setpriority on this very thread; raising nice needs no
        // privilege.
        unsafe { libc::setpriority(libc::PRIO_PROCESS, who, 0) };
    }
}
