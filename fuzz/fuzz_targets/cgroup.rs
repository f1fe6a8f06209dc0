//! `/proc/<pid>/cgroup`: which container a process is in.
//!
//! Any input is taken as the file's text (invalid UTF-8 replaced). Checked:
//! no panic, and any container or monitor ID returned is 64 lowercase hex
//! digits that occur in the input, with a pod UID (when there is one) of
//! lowercase hex digits and dashes only.
#![no_main]

use hearth_proc::container::{classify_cgroup, Classification};
use libfuzzer_sys::fuzz_target;

fn is_id(id: &str) -> bool {
    id.len() == 64 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let id = match classify_cgroup(&text) {
        Classification::Host => return,
        Classification::RuntimeMonitor { id } => id,
        Classification::Container(c) => {
            if let Some(uid) = &c.pod_uid {
                assert!(uid
                    .bytes()
                    .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f' | b'-')));
            }
            c.id
        }
    };
    assert!(is_id(&id), "{id:?}");
    assert!(text.to_ascii_lowercase().contains(&id));
});
