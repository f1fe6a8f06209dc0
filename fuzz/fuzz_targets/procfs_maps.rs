//! `/proc/<pid>/maps`.
#![no_main]

use hearth_proc::procfs::parse_maps;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Raw bytes, as read from the file: paths need not be UTF-8.
    let entries = parse_maps(data);
    let lines = data
        .split(|&b| b == b'\n')
        .filter(|l| !l.trim_ascii().is_empty())
        .count();
    assert_eq!(entries.len(), lines, "one result per non-blank line");
    let total = data.split(|&b| b == b'\n').count();
    let mut last_line = 0;
    for entry in &entries {
        match entry {
            Ok(e) => {
                assert!(e.start <= e.end);
                assert!(!e.path.contains('\n') && !e.path.starts_with(' '));
                let _ = e.is_file();
            }
            Err(err) => {
                assert!(err.line > last_line && err.line <= total, "{err}");
                last_line = err.line;
                let _ = err.to_string();
            }
        }
    }
});
