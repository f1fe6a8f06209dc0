//! The time-ordering batch: arbitrary records pushed, then visited.
//!
//! Input: a sample format (see `hearth_fuzz::format_from`), then records
//! as `cpu u8 | type u8 | misc u16 | len u16 | body[len]` until the input
//! ends (a short last body takes what is left). The order `for_each_sorted`
//! produces is checked against a stable sort by each record's time, where a
//! record without a time takes its predecessor's.
#![no_main]

use hearth::batch::Batch;
use hearth_fuzz::{format_from, Reader};
use hearth_sampler::parse_record;
use libfuzzer_sys::fuzz_target;

type Owned = (u32, u32, u16, Vec<u8>);

fuzz_target!(|data: &[u8]| {
    let mut r = Reader::new(data);
    let format = format_from(&mut r);
    let mut records: Vec<Owned> = Vec::new();
    while !r.is_empty() {
        let cpu = u32::from(r.u8());
        let record_type = u32::from(r.u8());
        let misc = r.u16();
        let len = usize::from(r.u16());
        records.push((cpu, record_type, misc, r.bytes(len).to_vec()));
    }

    // Expected order: stable by effective time.
    let mut expected: Vec<(u64, usize)> = Vec::with_capacity(records.len());
    let mut last = 0;
    for (i, (_, ty, misc, body)) in records.iter().enumerate() {
        let time = parse_record(&format, *ty, *misc, body)
            .ok()
            .and_then(|rec| rec.time())
            .unwrap_or(if i == 0 { 0 } else { last });
        last = time;
        expected.push((time, i));
    }
    expected.sort_by_key(|&(time, _)| time);

    let mut batch = Batch::new();
    // Twice: the second round reuses the cleared arena.
    for round in 0..2 {
        batch.clear();
        assert!(batch.is_empty());
        for (cpu, ty, misc, body) in &records {
            batch.push(&format, *cpu, *ty, *misc, body);
        }
        assert_eq!(batch.len(), records.len());
        let mut seen: Vec<Owned> = Vec::with_capacity(records.len());
        batch.for_each_sorted(|cpu, ty, misc, body| seen.push((cpu, ty, misc, body.to_vec())));
        assert_eq!(seen.len(), records.len(), "round {round}");
        for (got, &(_, i)) in seen.iter().zip(&expected) {
            assert_eq!(got, &records[i], "round {round}: order differs");
        }
    }
});
