//! Aggregation of unwound samples and the symbolized report model.
//!
//! The pipeline keeps two representations of a profile:
//!
//! * [`aggregate`]: what the sampling thread builds. Frames are *normalized*
//!   addresses (a binary and a file offset, or a kernel address), stacks are
//!   interned in a prefix tree, and samples with the same thread, names and
//!   stack are counted once. Nothing here needs symbols, so it is cheap and
//!   can outlive the processes it describes.
//! * [`report`]: what encoders read. Addresses have been resolved to
//!   functions (with inlined frames) by the symbolizer, and the tables mirror
//!   the ones of pprof and OTLP profiles so that each encoder is a plain walk.

pub mod aggregate;
pub mod frame;
pub mod report;
pub mod stack;

pub use aggregate::{Aggregate, KeepAlive, SampleKey, ThreadInfo};
pub use frame::{BinaryId, BinaryInfo, ContainerKey, RawFrame};
pub use report::{Function, GroupBy, Line, Location, Mapping, Report, ReportSample, Resource};
pub use stack::{StackId, StackTable};
