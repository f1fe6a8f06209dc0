//! `/proc/<pid>/comm`, and the name in a perf COMM record.
#![no_main]

use hearth_proc::procfs::parse_comm;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let name = parse_comm(data);
    assert!(!name.contains('\0'));
    let head = data.split(|&b| b == 0).next().unwrap_or(&[]);
    let head = head.strip_suffix(b"\n").unwrap_or(head);
    if let Ok(exact) = std::str::from_utf8(head) {
        assert_eq!(name, exact, "valid UTF-8 must come back unchanged");
    }
});
