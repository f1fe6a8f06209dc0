//! Replay of an untrusted capture file: `Capture::from_bytes`, then every
//! record through `Converter::handle` (process table, unwinding,
//! aggregation), as `hearth` does when it replays a capture.
#![no_main]

use hearth::capture::Capture;
use hearth::converter::{Converter, PidFilter};
use hearth_proc::ProcessTable;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let capture = match Capture::from_bytes(data.to_vec()) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    let table = ProcessTable::with_proc_root("/nonexistent-proc");
    let mut converter = Converter::new(capture.format, table, PidFilter::All);
    let mut visited = 0u64;
    let result = capture.for_each(|_cpu, record_type, misc, body| {
        visited += 1;
        converter.handle(record_type, misc, body);
    });
    match result {
        Ok(n) => assert_eq!(n as u64, visited),
        Err(e) => {
            let _ = e.to_string();
        }
    }
    let stats = converter.stats;
    assert_eq!(stats.records, visited);
    assert!(stats.samples + stats.parse_errors <= stats.records);
    assert!(stats.idle_samples + stats.filtered_samples <= stats.samples);
    let agg = converter.take_aggregate();
    assert!(agg.total_samples <= stats.samples);
    assert_eq!(agg.counts.values().sum::<u64>(), agg.total_samples);
});
