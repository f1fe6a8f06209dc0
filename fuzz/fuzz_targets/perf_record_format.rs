//! One perf record parsed with a sample format taken from the input:
//! `sample_type u64 | regs_user_mask u64 | flags u8 | type u32 | misc u16 |
//! size u16 | body` (see `hearth_fuzz::format_from` for the flags).
#![no_main]

use hearth_fuzz::{check_record, format_from, Reader};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut r = Reader::new(data);
    let format = format_from(&mut r);
    let record_type = r.u32();
    let misc = r.u16();
    let _size = r.u16();
    check_record(&format, record_type, misc, r.rest());
});
