//! Ground-truth workload "70/30 split", Rust edition of `tests/workloads/c/split.c`.
//!
//! One thread (main) runs rounds until the duration (first argument, seconds,
//! default 10) has passed. Each round calls two call chains:
//!
//! ```text
//! main -> run_rounds -> alpha_one -> alpha_two -> alpha_three -> leaf_seventy
//! main -> run_rounds -> beta_one  -> beta_two  -> beta_three  -> leaf_thirty
//! ```
//!
//! Both leaves run the same loop body (`mix_loop!`), `leaf_seventy` 7*K times and
//! `leaf_thirty` 3*K times, so the CPU split is 70/30 by construction. The
//! program also measures the split with `CLOCK_THREAD_CPUTIME_ID` around each
//! chain call and prints, like the C version:
//!
//! ```text
//! pid=<pid>                                     (first, flushed)
//! truth leaf_seventy=<frac> leaf_thirty=<frac>  (at exit)
//! ```
//!
//! Built with `cargo build --release -p hearth-workload-split`; on x86_64 the
//! release profile keeps no frame pointers, so the profiler has to unwind
//! with DWARF CFI. Every chain function is `#[inline(never)]` so it is a real
//! frame, and does arithmetic on the callee's result after the call so the
//! call cannot become a tail jump that would drop the caller's frame. The
//! constants differ per function so nothing is identical enough to be merged.

use std::hint::black_box;
use std::io::Write;

/// Iterations per "unit": a round is 10*K iterations, about 10 ms.
const K: u64 = 600_000;

/// The one loop body both leaves share (an xorshift step; each iteration
/// depends on the previous one). Sharing it means an iteration costs the same
/// in either leaf and only the counts decide the split. It is a macro, and a
/// plain `while` loop rather than a range, so that no inlined helper function
/// (`mix`, `Range::next`) shows up as an inline frame below the leaves when a
/// profiler expands inlined frames: the leaves must be the innermost frames.
macro_rules! mix_loop {
    ($x:expr, $n:expr) => {{
        let mut x: u64 = $x;
        let n: u64 = $n;
        let mut i: u64 = 0;
        while i < n {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            i += 1;
        }
        x
    }};
}

#[inline(never)]
fn leaf_seventy(x: u64) -> u64 {
    // black_box hides the count so LLVM treats both loops alike and cannot
    // precompute anything; `| 1` keeps the xorshift state nonzero.
    mix_loop!(black_box(x) | 1, black_box(7 * K)).wrapping_add(0x70)
}

#[inline(never)]
fn leaf_thirty(x: u64) -> u64 {
    mix_loop!(black_box(x) | 1, black_box(3 * K)).wrapping_add(0x30)
}

#[inline(never)]
fn alpha_three(x: u64) -> u64 {
    leaf_seventy(x ^ 0xa3).wrapping_add(3)
}

#[inline(never)]
fn alpha_two(x: u64) -> u64 {
    alpha_three(x ^ 0xa2).wrapping_add(2)
}

#[inline(never)]
fn alpha_one(x: u64) -> u64 {
    alpha_two(x ^ 0xa1).wrapping_add(1)
}

#[inline(never)]
fn beta_three(x: u64) -> u64 {
    leaf_thirty(x ^ 0xb3).wrapping_add(13)
}

#[inline(never)]
fn beta_two(x: u64) -> u64 {
    beta_three(x ^ 0xb2).wrapping_add(12)
}

#[inline(never)]
fn beta_one(x: u64) -> u64 {
    beta_two(x ^ 0xb1).wrapping_add(11)
}

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime failed");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Thread CPU time spent inside each chain, summed over all rounds.
struct Truth {
    alpha_ns: u64,
    beta_ns: u64,
}

#[inline(never)]
fn run_rounds(seconds: f64, truth: &mut Truth) -> u64 {
    let deadline = clock_ns(libc::CLOCK_MONOTONIC) + (seconds * 1e9) as u64;
    let mut acc: u64 = 0;
    let mut round: u64 = 1;
    // The seed changes every round so no call can be hoisted out of the loop.
    while clock_ns(libc::CLOCK_MONOTONIC) < deadline {
        let t0 = clock_ns(libc::CLOCK_THREAD_CPUTIME_ID);
        acc = acc.wrapping_add(alpha_one(acc ^ round));
        let t1 = clock_ns(libc::CLOCK_THREAD_CPUTIME_ID);
        acc = acc.wrapping_add(beta_one(acc ^ round));
        let t2 = clock_ns(libc::CLOCK_THREAD_CPUTIME_ID);
        truth.alpha_ns += t1 - t0;
        truth.beta_ns += t2 - t1;
        round += 1;
    }
    acc.wrapping_add(1)
}

fn main() {
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "pid={}", std::process::id()).unwrap();
        out.flush().unwrap();
    }

    let seconds = match std::env::args().nth(1) {
        None => 10.0,
        Some(arg) => match arg.parse::<f64>() {
            Ok(s) if s > 0.0 => s,
            _ => {
                eprintln!("usage: split_rust [seconds]");
                std::process::exit(2);
            }
        },
    };

    let mut truth = Truth {
        alpha_ns: 0,
        beta_ns: 0,
    };
    black_box(run_rounds(seconds, &mut truth));

    let total = ((truth.alpha_ns + truth.beta_ns) as f64).max(1.0);
    println!(
        "truth leaf_seventy={:.4} leaf_thirty={:.4}",
        truth.alpha_ns as f64 / total,
        truth.beta_ns as f64 / total
    );
}
