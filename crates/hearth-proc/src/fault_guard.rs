//! Reads of memory-mapped files that cannot kill the process.
//!
//! Hearth maps the ELF files of the processes it profiles (its own
//! [`Binary`](crate::Binary) values, and the symbolizer's parsed files).
//! Those files belong to other processes: one that truncates a shared
//! library it mapped leaves every page past the new end unbacked, and the
//! kernel answers the next read of such a page with `SIGBUS`, which by
//! default ends the profiler without a word.
//!
//! [`install`] sets a `SIGBUS` handler that answers exactly that fault (code
//! `BUS_ADRERR`: an access past the end of a mapped file) by putting an
//! anonymous zero page in place of the vanished one. The read is then
//! repeated and sees zeros, which every parser here treats as the malformed
//! input it has to accept anyway, and the handler counts the event so that
//! the caller can log it and reload the changed file (see
//! [`Binary::changed`](crate::Binary::changed)). Any other `SIGBUS` is
//! handed to the handler that was there before (or the default action),
//! so real faults still end the process as they would have.
//!
//! Each replaced page splits Hearth's mapping of the file (one more entry
//! against the kernel's per-process map count) until the binary is let
//! go, which the change check does within a second. The handler answers
//! any `BUS_ADRERR`, not only those in files of profiled processes: Hearth
//! writes to no mapped file, so any other one would be its own files cut
//! short, where a zero page fails as surely as the fault would.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

static FAULTS: AtomicU64 = AtomicU64::new(0);
static PAGE_SIZE: AtomicUsize = AtomicUsize::new(0);
static INSTALLED: AtomicBool = AtomicBool::new(false);
/// Serializes [`install`]; the handler never takes it.
static INSTALL_LOCK: Mutex<()> = Mutex::new(());

/// The action in force before [`install`], for faults that are not ours.
/// Set once, before the handler is installed; reading it is a plain
/// atomic load, which the handler may do.
static PREVIOUS: OnceLock<libc::sigaction> = OnceLock::new();

/// Reads of a mapped file that hit a page past its end, since start.
pub fn faults() -> u64 {
    FAULTS.load(Ordering::Relaxed)
}

/// Whether [`install`] has succeeded in this process.
pub fn installed() -> bool {
    INSTALLED.load(Ordering::Acquire)
}

/// Installs the handler for the whole process. Idempotent.
pub fn install() -> io::Result<()> {
    let _guard = INSTALL_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    if installed() {
        return Ok(());
    }
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    let page = usize::try_from(page)
        .ok()
        .filter(|p| p.is_power_of_two())
        .ok_or_else(|| io::Error::other("cannot read the page size"))?;
    PAGE_SIZE.store(page, Ordering::Relaxed);
    // SAFETY: plain-data struct; all-zero is a valid empty action.
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    action.sa_sigaction = on_sigbus as *const () as libc::sighandler_t;
    // SA_ONSTACK: run on the thread's alternate stack where Rust set one up.
    action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
    // SAFETY: the mask is ours to initialize.
    unsafe { libc::sigemptyset(&mut action.sa_mask) };
    // SAFETY: plain-data struct, filled in by sigaction below.
    let mut previous: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: read the current action without changing it, so that it is
    // stored before our handler can run and read it.
    if unsafe { libc::sigaction(libc::SIGBUS, std::ptr::null(), &mut previous) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // Under INSTALL_LOCK and before the handler exists: set exactly once.
    let _ = PREVIOUS.set(previous);
    // SAFETY: a valid action whose handler is async-signal-safe.
    if unsafe { libc::sigaction(libc::SIGBUS, &action, std::ptr::null_mut()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    INSTALLED.store(true, Ordering::Release);
    Ok(())
}

/// The handler. Only async-signal-safe calls: mmap, sigaction, atomics.
extern "C" fn on_sigbus(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO handler.
    let (code, addr) = unsafe { ((*info).si_code, (*info).si_addr() as usize) };
    let page = PAGE_SIZE.load(Ordering::Relaxed);
    if code == libc::BUS_ADRERR && addr != 0 && page != 0 {
        let start = addr & !(page - 1);
        // SAFETY: replaces exactly the one page that faulted, which lies in
        // a file mapping whose backing is gone; MAP_FIXED over it is what
        // makes the retried read succeed.
        let mapped = unsafe {
            libc::mmap(
                start as *mut libc::c_void,
                page,
                libc::PROT_READ,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                -1,
                0,
            )
        };
        if mapped != libc::MAP_FAILED {
            FAULTS.fetch_add(1, Ordering::Relaxed);
            return;
        }
    }
    if code <= 0 {
        // Sent by a process (kill, tgkill), not raised by an access: what
        // the default action does with it, whoever handled it before (Rust's
        // own handler would reset the action and drop the signal, silently
        // removing this guard). It is blocked until this handler returns.
        // SAFETY: all-zero is SIG_DFL with an empty mask; sigaction and
        // raise are async-signal-safe.
        unsafe {
            let mut dfl: libc::sigaction = std::mem::zeroed();
            dfl.sa_sigaction = libc::SIG_DFL;
            libc::sigaction(libc::SIGBUS, &dfl, std::ptr::null_mut());
            libc::raise(sig);
        }
        return;
    }
    // Another fault of an access: give it to whoever had it.
    match PREVIOUS.get().copied() {
        Some(prev) if prev.sa_sigaction != libc::SIG_DFL && prev.sa_sigaction != libc::SIG_IGN => {
            if prev.sa_flags & libc::SA_SIGINFO != 0 {
                // SAFETY: the previous handler was installed with this signature.
                let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                    unsafe { std::mem::transmute(prev.sa_sigaction) };
                f(sig, info, ctx);
            } else {
                // SAFETY: as above, the one-argument form.
                let f: extern "C" fn(libc::c_int) =
                    unsafe { std::mem::transmute(prev.sa_sigaction) };
                f(sig);
            }
        }
        _ => {
            // SAFETY: all-zero is SIG_DFL with an empty mask.
            let mut dfl: libc::sigaction = unsafe { std::mem::zeroed() };
            dfl.sa_sigaction = libc::SIG_DFL;
            // SAFETY: restoring the default action; the faulting access runs
            // again on return and ends the process as it would have.
            unsafe { libc::sigaction(libc::SIGBUS, &dfl, std::ptr::null_mut()) };
        }
    }
}
