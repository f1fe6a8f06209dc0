//! The history's two bounds (age and bytes), checked against what the
//! allocator actually holds, not only against the history's own estimate.

mod support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Duration;

use hearth_ui::query::{self, Selection, TimeRange};
use hearth_ui::{History, HistoryConfig};
use support::*;

/// Counts live heap bytes of the whole test process.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards to the system allocator and only counts sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// A window in which every process is new and runs code never seen
/// before: the worst case for the interned tables (think of a build
/// machine starting thousands of compilers, each with its own paths).
fn churn_window(i: u64, processes: u32, depth: usize) -> hearth_profile::Report {
    let mut b = Builder::new(1_000 + i * 5, 5);
    for p in 0..processes {
        let pid = (i as u32) * processes + p;
        let frames: Vec<String> = (0..depth)
            .map(|d| format!("fn_{i}_{p}_{d}_with_a_longish_mangled_looking_name"))
            .collect();
        let refs: Vec<&str> = frames.iter().map(String::as_str).collect();
        b.sample(0, pid, &format!("proc-{pid}"), &refs, 1 + u64::from(p % 7));
    }
    b.build()
}

#[test]
fn byte_bound_holds_in_real_memory_under_churn() {
    // Both tests of this file measure the whole process: run alone.
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let max = 4 << 20;
    let start = LIVE.load(Ordering::Relaxed);
    let mut h = History::new(HistoryConfig {
        retention: Duration::from_secs(24 * 3600),
        max_bytes: max,
    });
    let mut peak_estimate = 0;
    let mut peak_live = 0;
    for i in 0..300 {
        let w = churn_window(i, 200, 12);
        h.ingest(&w);
        drop(w);
        peak_estimate = peak_estimate.max(h.bytes());
        let live = LIVE.load(Ordering::Relaxed) - start;
        peak_live = peak_live.max(live);
        assert!(
            h.bytes() <= max,
            "estimate {} over the bound {max}",
            h.bytes()
        );
    }
    let live = (LIVE.load(Ordering::Relaxed) - start) as usize;
    println!(
        "bound {max}: estimate at end {} (peak {peak_estimate}), live heap at end {live} (peak {peak_live}), \
         windows kept {}, evicted {}, compactions {}",
        h.bytes(),
        h.windows().len(),
        h.stats().windows_evicted,
        h.stats().compactions
    );
    assert!(h.stats().windows_evicted > 0, "the bound never had to act");
    // Between ingests the heap really held stays within the bound (during
    // a compaction the tables briefly exist twice).
    assert!(
        peak_live as usize <= max,
        "the history held {peak_live} bytes of heap against a bound of {max}"
    );
    // What is kept is still whole and answers queries.
    let newest = h.windows().next_back().unwrap().samples;
    let r = TimeRange::from_params(&h, None, None, Some(1.0)).unwrap();
    assert_eq!(query::flame(&h, &Selection::All, r).total, newest);
}

#[test]
fn age_bound_drops_old_windows_and_forgets_their_stacks() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut h = History::new(HistoryConfig {
        retention: Duration::from_secs(60),
        max_bytes: usize::MAX,
    });
    let start = LIVE.load(Ordering::Relaxed);
    let mut sizes = Vec::new();
    for i in 0..2_000u64 {
        h.ingest(&churn_window(i, 20, 8));
        let (frames, stacks, groups) = h.table_sizes();
        sizes.push(frames + stacks + groups);
        // 5 s windows, 60 s kept: the window that ends exactly 60 s before
        // the newest is gone, so 12 remain.
        assert!(
            h.windows().len() <= 12,
            "{} windows kept",
            h.windows().len()
        );
        let newest = h.windows().next_back().unwrap().end_unix_ns;
        assert!(h.windows().all(|w| w.end_unix_ns + 60 * SEC > newest));
    }
    assert_eq!(h.stats().windows_expired, 2_000 - 12);
    // Tables are rebuilt from what is kept: a bounded multiple of 12
    // windows' worth of entries, not 2000 windows' worth.
    let per_window = 20 * (8 + 1 + 1);
    let max_tables = sizes.iter().copied().max().unwrap();
    assert!(
        max_tables <= 2 * 12 * per_window + 4096 + per_window,
        "tables grew to {max_tables} entries"
    );
    let live = LIVE.load(Ordering::Relaxed) - start;
    println!(
        "age bound: tables peak {max_tables} entries, live heap {live} bytes after 2000 windows"
    );
    assert!(
        live < 8 << 20,
        "{live} bytes still held after 2000 windows of churn"
    );
}

static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
