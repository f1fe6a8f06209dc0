//! One perf record, laid out as in the ring buffer (`type u32 | misc u16 |
//! size u16 | body`), parsed with the sample format Hearth asks for. The
//! header's size is ignored: the body is the rest of the input.
#![no_main]

use hearth_fuzz::{check_record, Reader};
use hearth_sampler::SampleFormat;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut r = Reader::new(data);
    let record_type = r.u32();
    let misc = r.u16();
    let _size = r.u16();
    check_record(&SampleFormat::hearth_default(), record_type, misc, r.rest());
});
