//! `/proc/<pid>/status`.
#![no_main]

use hearth_proc::procfs::parse_status;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let status = parse_status(&text);
    if let Some(name) = &status.name {
        assert!(!name.contains('\n'));
        assert_eq!(name.trim(), name);
    }
});
