//! Folded stacks: one `root;...;leaf count` line per distinct stack.
//!
//! The root frame is the process name (below the pod and container when the
//! report is grouped by them), followed by the functions from the
//! outermost to the innermost, with inlined functions expanded. Equal stacks
//! from different threads are merged and lines are sorted so that the output
//! is deterministic.

use std::collections::HashMap;
use std::io::{self, BufWriter, Write};

use hearth_profile::Report;

/// Name used for a frame that is empty after sanitizing.
const EMPTY_FRAME: &str = "[unknown]";

/// Returns the folded lines of `report`, sorted, without trailing newlines.
///
/// Samples with a zero count are left out.
pub fn folded_lines(report: &Report) -> Vec<String> {
    let mut counts: HashMap<String, u64> = HashMap::new();
    for sample in report.samples.iter().filter(|s| s.count > 0) {
        let mut stack = String::new();
        for frame in crate::grouping::root_frames(report, sample) {
            stack.push_str(&sanitize_frame(&frame));
            stack.push(';');
        }
        stack.push_str(&sanitize_frame(&sample.process_name));
        for name in report.function_names_root_first(sample) {
            stack.push(';');
            stack.push_str(&sanitize_frame(name));
        }
        let total = counts.entry(stack).or_default();
        *total = total.saturating_add(sample.count);
    }
    let mut lines: Vec<String> = counts
        .into_iter()
        .map(|(stack, count)| format!("{stack} {count}"))
        .collect();
    lines.sort_unstable();
    lines
}

/// Writes the folded lines of `report`, each terminated by `\n`.
pub fn write_folded(report: &Report, w: impl Write) -> io::Result<()> {
    let mut w = BufWriter::new(w);
    for line in folded_lines(report) {
        w.write_all(line.as_bytes())?;
        w.write_all(b"\n")?;
    }
    w.flush()
}

/// Splits a folded line into its frames (root first) and its count.
///
/// The count is whatever follows the last space, so frame names may contain
/// spaces. A trailing `\n` or `\r\n` is ignored. Returns `None` when the
/// count is missing or not a number, or when there are no frames.
pub fn parse_folded_line(line: &str) -> Option<(Vec<&str>, u64)> {
    let line = line.trim_end_matches(['\n', '\r']);
    let (stack, count) = line.rsplit_once(' ')?;
    let count = count.parse().ok()?;
    if stack.is_empty() {
        return None;
    }
    Some((stack.split(';').collect(), count))
}

/// Makes `name` safe to use as one frame of a folded line.
///
/// * `;` separates frames, so it becomes `:`.
/// * Runs of whitespace and control characters (newlines included) become one
///   space, and the name is trimmed.
/// * If the last word is a number, the space before it becomes `_`: some
///   readers accept a second count column and would take the word for it.
/// * A leading `# ` becomes `#_`, since readers skip such lines as comments.
/// * An empty name becomes `[unknown]`.
pub fn sanitize_frame(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut pending_space = false;
    for c in name.chars() {
        if c.is_whitespace() || c.is_control() {
            pending_space = !out.is_empty();
            continue;
        }
        if pending_space {
            out.push(' ');
            pending_space = false;
        }
        out.push(if c == ';' { ':' } else { c });
    }
    if out.is_empty() {
        return EMPTY_FRAME.to_string();
    }
    if let Some(space) = out.rfind(' ') {
        if looks_like_count(&out[space + 1..]) {
            out.replace_range(space..=space, "_");
        }
    }
    if out.starts_with("# ") {
        out.replace_range(1..2, "_");
    }
    out
}

/// True for `123` and `1.5`, the shapes a sample-count column can take.
fn looks_like_count(word: &str) -> bool {
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    match word.split_once('.') {
        Some((int, frac)) => digits(int) && digits(frac),
        None => !word.is_empty() && digits(word),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata;
    use hearth_profile::{Function, Line, Location, ReportSample};

    #[test]
    fn lines_are_rooted_at_the_process_merged_and_sorted() {
        let lines = folded_lines(&testdata::two_processes());
        assert_eq!(
            lines,
            vec![
                "app;__libc_start_main;main;read;entry_SYSCALL_64;do_syscall_64 2",
                // Threads 100 (5) and 101 (3) merged; `hash` is inlined into `work`.
                "app;__libc_start_main;main;work;hash 8",
                "db;main;recurse;recurse;recurse 4",
                "db;weird:name with newline 1",
            ]
        );
    }

    #[test]
    fn write_folded_terminates_every_line() {
        let report = testdata::two_processes();
        let mut out = Vec::new();
        write_folded(&report, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.ends_with(
            "hash 8\ndb;main;recurse;recurse;recurse 4\ndb;weird:name with newline 1\n"
        ));
        assert_eq!(text.lines().count(), 4);
    }

    #[test]
    fn every_line_parses_back() {
        let report = testdata::two_processes();
        let mut total = 0;
        for line in folded_lines(&report) {
            let (frames, count) = parse_folded_line(&line).unwrap();
            assert!(frames.len() >= 2, "{line}");
            assert!(frames.iter().all(|f| !f.is_empty()), "{line}");
            total += count;
        }
        assert_eq!(total, report.total_samples());
    }

    #[test]
    fn parser_takes_the_count_after_the_last_space() {
        assert_eq!(
            parse_folded_line("p;operator new(unsigned long);f 12\n"),
            Some((vec!["p", "operator new(unsigned long)", "f"], 12))
        );
        assert_eq!(parse_folded_line("a 3\r\n"), Some((vec!["a"], 3)));
        assert_eq!(parse_folded_line("a;b"), None);
        assert_eq!(parse_folded_line("a;b x"), None);
        assert_eq!(parse_folded_line("a;b -1"), None);
        assert_eq!(parse_folded_line(" 5"), None);
        assert_eq!(parse_folded_line(""), None);
    }

    #[test]
    fn frame_names_are_sanitized() {
        assert_eq!(sanitize_frame("a;b"), "a:b");
        assert_eq!(sanitize_frame("  x \n\t y\r\n"), "x y");
        assert_eq!(sanitize_frame("nul\0byte"), "nul byte");
        assert_eq!(sanitize_frame(" \n "), "[unknown]");
        assert_eq!(sanitize_frame(""), "[unknown]");
        assert_eq!(sanitize_frame("thread 12"), "thread_12");
        assert_eq!(sanitize_frame("v 1.5"), "v_1.5");
        assert_eq!(sanitize_frame("# x"), "#_x");
        assert_eq!(
            sanitize_frame("[unknown] libfoo.so+0x1234"),
            "[unknown] libfoo.so+0x1234"
        );
        assert_eq!(sanitize_frame("vec<[u8; 8]> 2x"), "vec<[u8: 8]> 2x");
    }

    #[test]
    fn zero_counts_and_empty_reports_produce_no_lines() {
        let mut report = testdata::two_processes();
        for s in &mut report.samples {
            s.count = 0;
        }
        assert!(folded_lines(&report).is_empty());
        assert!(folded_lines(&Report::default()).is_empty());
    }

    #[test]
    fn empty_stacks_and_dangling_indices_keep_the_process_root() {
        let report = Report {
            functions: vec![Function {
                name: "f".into(),
                file: None,
            }],
            locations: vec![Location {
                mapping: None,
                address: 1,
                lines: vec![
                    Line {
                        function: 9,
                        line: 0,
                    },
                    Line {
                        function: 0,
                        line: 0,
                    },
                ],
                kernel: false,
            }],
            samples: vec![
                ReportSample {
                    stack: vec![],
                    pid: 1,
                    tid: 1,
                    process_name: "".into(),
                    thread_name: "t".into(),
                    resource: 0,
                    count: 2,
                },
                ReportSample {
                    stack: vec![5, 0],
                    pid: 1,
                    tid: 1,
                    process_name: "p".into(),
                    thread_name: "t".into(),
                    resource: 0,
                    count: 1,
                },
            ],
            ..Default::default()
        };
        assert_eq!(folded_lines(&report), vec!["[unknown] 2", "p;f 1"]);
    }
}
