//! The kernel's CPU list syntax (`/sys/devices/system/cpu/online`).
#![no_main]

use hearth_sampler::session::parse_cpu_list;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(cpus) = parse_cpu_list(text) {
        assert!(!cpus.is_empty());
        // Each comma-separated part contributes at most 65,537 CPUs.
        let parts = text.split(',').count();
        assert!(cpus.len() <= parts * 65_537);
    }
});
