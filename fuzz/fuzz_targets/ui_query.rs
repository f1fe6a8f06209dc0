//! The profile page's query parameters: a selection and a time range, as
//! anyone who can reach the page's port may send them.
//!
//! The input is split at the first 0xff byte: before it the selection
//! (text), after it up to three numbers (from, to, last). Checked: no
//! panic; a parsed selection and range answer every query, and the flame
//! graph never claims more samples than the history holds.
#![no_main]

use std::sync::OnceLock;

use hearth_ui::query::{self, Selection, TimeRange};
use hearth_ui::{History, HistoryConfig};
use libfuzzer_sys::fuzz_target;

fn history() -> &'static History {
    static H: OnceLock<History> = OnceLock::new();
    H.get_or_init(|| {
        let mut h = History::new(HistoryConfig::default());
        for i in 0..4 {
            h.ingest(&hearth_fuzz::ui_window(1_000 + i * 5));
        }
        h
    })
}

fuzz_target!(|data: &[u8]| {
    let (sel, rest) = match data.iter().position(|&b| b == 0xff) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let Ok(sel) = Selection::parse(&String::from_utf8_lossy(sel)) else {
        return;
    };
    let num = |i: usize| -> Option<u64> {
        let b = rest.get(i * 8..i * 8 + 8)?;
        Some(u64::from_le_bytes(b.try_into().ok()?))
    };
    let last = num(2).map(|v| f64::from_bits(v));
    let h = history();
    let Ok(range) = TimeRange::from_params(h, num(0), num(1), last) else {
        return;
    };
    let held: u64 = h.windows().map(|w| w.samples).sum();
    let f = query::flame(h, &sel, range);
    assert!(f.total <= held && f.root.v == f.total);
    let d = query::diff(h, &sel, range, TimeRange::ALL);
    assert!(d.base_total <= held);
    let _ = query::top(h, &sel, range, 50);
    let _ = query::overview(h, range, &sel);
    assert!(query::report(h, &sel, range).total_samples() <= held);
});
