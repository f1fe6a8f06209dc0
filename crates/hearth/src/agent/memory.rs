//! One memory budget for the agent (`--memory-mib`), shared by its parts.
//!
//! The parts that grow with what the node runs get a bound each, a share of
//! the budget unless a flag of their own sets it:
//!
//! | part | share | own flag |
//! |---|---:|---|
//! | page history | 1/4 | `--ui-memory-mib` |
//! | export queue (collector away) | 1/8 | `--otlp-queue-mib` |
//! | symbolizer: files parsed | 1/4 | |
//! | symbolizer: names cached | 1/16 | |
//!
//! The remaining 5/16 is what is not bounded by bytes but by counts (the
//! process table, the parsed binaries' unwind data, at most
//! [`hearth_proc::binary::DEFAULT_MAX_BINARIES`] of them), plus the
//! program, its threads and the perf rings. `/metrics` shows each part
//! (`hearth_memory_bytes{part=...}`) next to the budget and the agent's
//! resident memory, so an operator sees where the memory goes.

use std::fmt;

/// Default budget: the DaemonSet's memory request.
pub const DEFAULT_MEMORY_MIB: u64 = 128;
/// Below this the parts' shares are too small to work with.
pub const MIN_MEMORY_MIB: u64 = 32;

/// A part of the agent whose memory `/metrics` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Part {
    UiHistory,
    ExportQueue,
    SymbolizerFiles,
    SymbolizerCache,
    /// Parsed binaries: the sections unwinding reads, as mapped.
    Binaries,
    /// The process table and the per-process unwinders (estimated).
    Processes,
}

impl Part {
    pub const ALL: [Part; 6] = [
        Part::UiHistory,
        Part::ExportQueue,
        Part::SymbolizerFiles,
        Part::SymbolizerCache,
        Part::Binaries,
        Part::Processes,
    ];

    /// The `part` label's value.
    pub fn label(self) -> &'static str {
        match self {
            Part::UiHistory => "ui_history",
            Part::ExportQueue => "export_queue",
            Part::SymbolizerFiles => "symbolizer_files",
            Part::SymbolizerCache => "symbolizer_cache",
            Part::Binaries => "binaries",
            Part::Processes => "processes",
        }
    }
}

impl fmt::Display for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// The agent's memory budget and the bounds it gives the parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryBudget {
    pub total_bytes: u64,
}

impl Default for MemoryBudget {
    fn default() -> Self {
        MemoryBudget::from_mib(DEFAULT_MEMORY_MIB)
    }
}

impl MemoryBudget {
    pub fn from_mib(mib: u64) -> Self {
        MemoryBudget {
            total_bytes: mib.saturating_mul(1 << 20),
        }
    }

    /// The bound a part gets from the budget (`None`: bounded by counts,
    /// only shown).
    pub fn share(&self, part: Part) -> Option<u64> {
        let t = self.total_bytes;
        match part {
            Part::UiHistory => Some(t / 4),
            Part::ExportQueue => Some(t / 8),
            Part::SymbolizerFiles => Some(t / 4),
            Part::SymbolizerCache => Some(t / 16),
            Part::Binaries | Part::Processes => None,
        }
    }

    /// The budget's share of a part as a `usize` bound.
    pub fn share_usize(&self, part: Part) -> usize {
        self.share(part)
            .map_or(usize::MAX, |b| usize::try_from(b).unwrap_or(usize::MAX))
    }
}

/// The resident memory of this process, from `/proc/self/status`:
/// (anonymous, file-backed) bytes.
pub fn resident_bytes() -> Option<(u64, u64)> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        let kib: u64 = line[name.len()..]
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        Some(kib * 1024)
    };
    Some((field("RssAnon:")?, field("RssFile:")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_leave_room_for_the_rest() {
        let b = MemoryBudget::default();
        assert_eq!(b.total_bytes, 128 << 20);
        let bounded: u64 = Part::ALL.iter().filter_map(|p| b.share(*p)).sum();
        assert_eq!(bounded, (128 << 20) / 16 * 11);
        assert_eq!(b.share(Part::UiHistory), Some(32 << 20));
        assert_eq!(b.share(Part::Processes), None);
        assert_eq!(b.share_usize(Part::Binaries), usize::MAX);
    }

    #[test]
    fn reads_own_resident_memory() {
        let (anon, file) = resident_bytes().expect("/proc/self/status");
        assert!(anon > 0 && file > 0, "{anon} {file}");
    }
}
