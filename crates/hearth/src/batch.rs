//! Records drained from all CPUs, put in time order before processing.
//!
//! Each CPU's ring buffer is ordered, but a process can fork on one CPU and
//! be sampled on another a moment later; processing all CPUs' records of a
//! drain in timestamp order keeps the process table ahead of the samples.

use hearth_sampler::{parse_record, SampleFormat};

#[derive(Debug, Clone, Copy)]
struct Entry {
    time: u64,
    seq: u32,
    cpu: u32,
    record_type: u32,
    misc: u16,
    start: usize,
    end: usize,
}

/// A reusable arena of record bodies plus their order.
#[derive(Default)]
pub struct Batch {
    bytes: Vec<u8>,
    entries: Vec<Entry>,
}

impl Batch {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn clear(&mut self) {
        self.bytes.clear();
        self.entries.clear();
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Copies one record in. Records without a timestamp (or that do not
    /// parse) keep their arrival position relative to their neighbours.
    pub fn push(
        &mut self,
        format: &SampleFormat,
        cpu: u32,
        record_type: u32,
        misc: u16,
        body: &[u8],
    ) {
        let time = parse_record(format, record_type, misc, body)
            .ok()
            .and_then(|r| r.time())
            .or_else(|| self.entries.last().map(|e| e.time))
            .unwrap_or(0);
        let start = self.bytes.len();
        self.bytes.extend_from_slice(body);
        self.entries.push(Entry {
            time,
            seq: self.entries.len() as u32,
            cpu,
            record_type,
            misc,
            start,
            end: self.bytes.len(),
        });
    }

    /// Visits the records in time order as `(cpu, type, misc, body)`.
    pub fn for_each_sorted(&mut self, mut f: impl FnMut(u32, u32, u16, &[u8])) {
        self.entries.sort_unstable_by_key(|e| (e.time, e.seq));
        for e in &self.entries {
            f(e.cpu, e.record_type, e.misc, &self.bytes[e.start..e.end]);
        }
    }
}

/// Drains every ring of `session`, puts the records in time order, shows
/// each to `tap` (capture files), and feeds it to `converter`. Returns the
/// number of records.
pub fn pump(
    session: &mut hearth_sampler::Session,
    batch: &mut Batch,
    converter: &mut crate::converter::Converter,
    mut tap: impl FnMut(u32, u32, u16, &[u8]),
) -> usize {
    let format = session.format();
    // Binaries the loader parsed since the last drain, before the records
    // that may need them.
    converter.poll_loads();
    batch.clear();
    session.drain(|cpu, ty, misc, body| batch.push(&format, cpu, ty, misc, body));
    batch.for_each_sorted(|cpu, ty, misc, body| {
        tap(cpu, ty, misc, body);
        converter.handle(ty, misc, body);
    });
    batch.len()
}
