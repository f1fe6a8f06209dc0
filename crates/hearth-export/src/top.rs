//! The hottest functions as a plain-text table for the terminal.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;

use hearth_profile::Report;

use crate::summary;

/// How many samples a function accounts for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionShare {
    /// Function name; functions with equal names are merged.
    pub name: String,
    /// Samples whose innermost frame is this function.
    pub self_count: u64,
    /// Samples with this function anywhere on the stack, each sample counted
    /// once even when the function recurses.
    pub total_count: u64,
}

/// Every function seen in `report`, by self count then total count (both
/// descending), then name.
///
/// Inlined functions count as frames of their own, and the innermost frame
/// of a sample is the innermost inlined function of its leaf address.
pub fn top_functions(report: &Report) -> Vec<FunctionShare> {
    let mut counts: HashMap<&str, (u64, u64)> = HashMap::new();
    let mut on_stack: HashSet<&str> = HashSet::new();
    for sample in report.samples.iter().filter(|s| s.count > 0) {
        let names = report.function_names_root_first(sample);
        if let Some(&leaf) = names.last() {
            let entry = counts.entry(leaf).or_default();
            entry.0 = entry.0.saturating_add(sample.count);
        }
        on_stack.clear();
        for name in names {
            if on_stack.insert(name) {
                let entry = counts.entry(name).or_default();
                entry.1 = entry.1.saturating_add(sample.count);
            }
        }
    }
    let mut shares: Vec<FunctionShare> = counts
        .into_iter()
        .map(|(name, (self_count, total_count))| FunctionShare {
            name: name.to_string(),
            self_count,
            total_count,
        })
        .collect();
    shares.sort_unstable_by(|a, b| {
        b.self_count
            .cmp(&a.self_count)
            .then(b.total_count.cmp(&a.total_count))
            .then_with(|| a.name.cmp(&b.name))
    });
    shares
}

/// Renders the `limit` hottest functions of `report` as a table, preceded
/// by a header with the sample count, duration, frequency and lost records.
pub fn top_table(report: &Report, limit: usize) -> String {
    let total: u64 = report
        .samples
        .iter()
        .fold(0, |acc, s| acc.saturating_add(s.count));
    let mut out = format!("{}\n", summary(report));
    if report.lost_samples > 0 {
        let _ = writeln!(
            out,
            "warning: {} records (samples and process events alike) were lost because a \
             ring buffer was full",
            report.lost_samples
        );
    }
    if total == 0 {
        out.push_str("No samples were recorded.\n");
        return out;
    }

    let shares = top_functions(report);
    let shown = &shares[..limit.min(shares.len())];
    let width = shown
        .iter()
        .map(|s| s.total_count.max(s.self_count).to_string().len())
        .max()
        .unwrap_or(0)
        .max("total".len());
    let percent = |count: u64| count as f64 * 100.0 / total as f64;

    let _ = writeln!(
        out,
        "{:>7} {:>width$} {:>7} {:>width$}  function",
        "self%", "self", "total%", "total"
    );
    for share in shown {
        let _ = writeln!(
            out,
            "{:>6.2}% {:>width$} {:>6.2}% {:>width$}  {}",
            percent(share.self_count),
            share.self_count,
            percent(share.total_count),
            share.total_count,
            printable(&share.name),
        );
    }
    if shares.len() > shown.len() {
        let _ = writeln!(out, "... and {} more functions", shares.len() - shown.len());
    }
    out
}

/// Keeps a name on one terminal line.
fn printable(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata;

    fn share(name: &str, self_count: u64, total_count: u64) -> FunctionShare {
        FunctionShare {
            name: name.to_string(),
            self_count,
            total_count,
        }
    }

    #[test]
    fn self_and_total_counts() {
        let shares = top_functions(&testdata::two_processes());
        assert_eq!(
            shares,
            vec![
                // Inlined into `work`, but it is the innermost frame.
                share("hash", 8, 8),
                // Three frames deep in one sample, counted once.
                share("recurse", 4, 4),
                share("do_syscall_64", 2, 2),
                share("weird;name\nwith newline", 1, 1),
                share("main", 0, 14),
                share("__libc_start_main", 0, 10),
                share("work", 0, 8),
                share("entry_SYSCALL_64", 0, 2),
                share("read", 0, 2),
            ]
        );
        let self_sum: u64 = shares.iter().map(|s| s.self_count).sum();
        assert_eq!(self_sum, 15);
    }

    #[test]
    fn recursion_counts_once_per_sample() {
        let mut report = testdata::two_processes();
        report.samples.retain(|s| s.pid == 200 && s.tid == 200);
        report.samples[0].stack = vec![6, 0, 6, 6, 0];
        let shares = top_functions(&report);
        assert_eq!(shares, vec![share("recurse", 4, 4), share("main", 0, 4)]);
    }

    #[test]
    fn table_has_header_rows_and_limit() {
        let table = top_table(&testdata::two_processes(), 3);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines[0], "15 samples over 2.50 s at 100 Hz, 7 records lost");
        assert!(lines[1].contains("7 records (samples"), "{table}");
        assert!(
            lines[2].contains("self%") && lines[2].ends_with("function"),
            "{table}"
        );
        assert_eq!(lines[3], " 53.33%     8  53.33%     8  hash");
        assert!(lines[4].ends_with("  recurse"), "{table}");
        assert!(lines[5].ends_with("  do_syscall_64"), "{table}");
        assert_eq!(lines[6], "... and 6 more functions");
        assert_eq!(lines.len(), 7);
    }

    #[test]
    fn table_keeps_names_on_one_line() {
        let mut report = testdata::two_processes();
        report.lost_samples = 0;
        let table = top_table(&report, 100);
        assert_eq!(table.lines().count(), 2 + 9, "{table}");
        assert!(table.contains("weird;name with newline"));
        assert!(table.contains(" 93.33%    14  main"), "{table}");
        assert!(!table.contains("lost"));
    }

    #[test]
    fn empty_report_table() {
        let table = top_table(&Report::default(), 10);
        assert!(table.contains("0 samples"));
        assert!(table.contains("No samples were recorded."));
    }
}
