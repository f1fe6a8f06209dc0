//! Sampling every CPU with perf events, and parsing what the kernel writes.
//!
//! * [`format`]: the sample layout Hearth asks the kernel for.
//! * [`frequency`]: the highest sampling frequency, from the kernel's limit
//!   and Hearth's own.
//! * [`record`]: a bounds-checked parser of raw perf records. Its input comes
//!   from the kernel (or from a capture file), so it never trusts a length.
//! * [`session`]: opens one software CPU-clock event per online CPU, either
//!   for the whole machine or for chosen tasks, and drains the ring buffers.

pub mod format;
pub mod frequency;
pub mod record;
pub mod session;

pub use format::SampleFormat;
pub use frequency::{bound_frequency, Frequency, MAX_SAMPLES_PER_SECOND};
pub use record::{
    parse_record, CommRecord, ExitForkRecord, LostRecord, Mmap2Record, ParseError, Record,
    SampleId, SampleRecord,
};
pub use session::{Drained, OpenError, RawRecord, Session, SessionConfig, Target};
