//! Records drained from all CPUs, put in time order before processing.
//!
//! Each CPU's ring buffer is ordered, but a process can fork on one CPU and
//! be sampled on another a moment later; processing all CPUs' records of a
//! drain in timestamp order keeps the process table ahead of the samples.
//! A drain is bounded in bytes, so a batch is too.

use std::time::Duration;

use hearth_sampler::{parse_record, Drained, SampleFormat};

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
        self.for_each_sorted_while(|cpu, ty, misc, body| {
            f(cpu, ty, misc, body);
            true
        });
    }

    /// Visits the records in time order until `f` returns false; returns
    /// how many were visited.
    pub fn for_each_sorted_while(
        &mut self,
        mut f: impl FnMut(u32, u32, u16, &[u8]) -> bool,
    ) -> usize {
        self.entries.sort_unstable_by_key(|e| (e.time, e.seq));
        let mut visited = 0;
        for e in &self.entries {
            visited += 1;
            if !f(e.cpu, e.record_type, e.misc, &self.bytes[e.start..e.end]) {
                break;
            }
        }
        visited
    }
}

/// What one [`pump`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pumped {
    pub drained: Drained,
    /// Records drained but not processed, because `interrupt` said so.
    pub unprocessed: usize,
}

/// How many records are processed between two looks at `interrupt`.
const INTERRUPT_EVERY: usize = 16;

/// Drains the rings of `session` (at most a ring's size from each, see
/// [`hearth_sampler::Session::drain`]), puts the records in time order, shows
/// each to `tap` (capture files), and feeds it to `converter`, until
/// `interrupt` returns true (it is asked every few records): a stop
/// request is then noticed within milliseconds of work, however far
/// behind the reader is. The records not processed are counted.
pub fn pump(
    session: &mut hearth_sampler::Session,
    batch: &mut Batch,
    converter: &mut crate::converter::Converter,
    mut tap: impl FnMut(u32, u32, u16, &[u8]),
    interrupt: impl Fn() -> bool,
) -> Pumped {
    let format = session.format();
    // Binaries the loader parsed since the last drain, before the records
    // that may need them.
    converter.poll_loads();
    batch.clear();
    let drained = session.drain(|cpu, ty, misc, body| batch.push(&format, cpu, ty, misc, body));
    let mut processed = 0usize;
    batch.for_each_sorted_while(|cpu, ty, misc, body| {
        if processed % INTERRUPT_EVERY == 0 && processed > 0 && interrupt() {
            return false;
        }
        tap(cpu, ty, misc, body);
        converter.handle(ty, misc, body);
        processed += 1;
        true
    });
    Pumped {
        drained,
        unprocessed: batch.len() - processed,
    }
}

/// Once sampling is disabled, what the rings still hold is processed for
/// at most this long: a stop request must end a recording promptly even
/// when the reader had fallen behind. What is left after it is dropped.
pub const FINAL_DRAIN: Duration = Duration::from_secs(1);
