//! The symbolized profile that every encoder reads.
//!
//! Tables mirror pprof and OTLP: samples point at locations, locations hold
//! one line per (inlined) function, lines point at functions, locations point
//! at mappings. Indices are plain `usize` into the report's vectors.

use std::sync::Arc;

use crate::frame::ContainerKey;

/// A file (or the kernel) that code was executed from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Mapping {
    /// File path, or `[kernel.kallsyms]` for the kernel.
    pub path: Arc<str>,
    /// GNU build id as lowercase hex, when known.
    pub build_id: Option<String>,
    pub kernel: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Function {
    /// Demangled name, or a placeholder such as `[unknown] libfoo.so+0x1234`
    /// when the binary has no symbol for the address.
    pub name: Arc<str>,
    pub file: Option<Arc<str>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Line {
    pub function: usize,
    /// Source line, 0 when unknown.
    pub line: u32,
}

/// One address. `lines[0]` is the innermost (possibly inlined) function and
/// the last entry is the function the address physically belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Location {
    pub mapping: Option<usize>,
    /// File offset for user code, the address for kernel code.
    pub address: u64,
    pub lines: Vec<Line>,
    pub kernel: bool,
}

/// Where samples come from: one container, or the host (processes outside
/// any container). Attributes follow the OpenTelemetry semantic conventions
/// (`container.id`, `k8s.pod.name`, `service.name`, ...).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resource {
    pub container: Option<Arc<ContainerKey>>,
    pub attributes: Vec<(String, String)>,
}

impl Resource {
    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportSample {
    /// Location indices, leaf first.
    pub stack: Vec<usize>,
    pub pid: u32,
    pub tid: u32,
    pub process_name: Arc<str>,
    pub thread_name: Arc<str>,
    /// Index into [`Report::resources`].
    pub resource: usize,
    pub count: u64,
}

/// How a report groups samples above the process: encoders add the
/// container (and pod) as root frames or labels.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum GroupBy {
    #[default]
    Process,
    Container,
    Pod,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Wall-clock start of the recording, nanoseconds since the Unix epoch.
    pub start_unix_ns: u64,
    pub duration_ns: u64,
    /// Sampling frequency requested, in Hz.
    pub frequency_hz: u64,
    pub mappings: Vec<Mapping>,
    pub functions: Vec<Function>,
    pub locations: Vec<Location>,
    pub samples: Vec<ReportSample>,
    /// Resources the samples point at; never empty when there are samples.
    pub resources: Vec<Resource>,
    /// Records of any kind (not only samples) the kernel dropped because a
    /// ring buffer was full; see `Aggregate::lost_samples`.
    pub lost_samples: u64,
    pub group_by: GroupBy,
}

impl Report {
    /// The resource of a sample (the host resource for a bad index).
    pub fn resource_of(&self, sample: &ReportSample) -> Option<&Resource> {
        self.resources.get(sample.resource)
    }

    /// Nominal time each sample stands for, in nanoseconds.
    pub fn period_ns(&self) -> u64 {
        1_000_000_000u64.checked_div(self.frequency_hz).unwrap_or(0)
    }

    pub fn total_samples(&self) -> u64 {
        self.samples.iter().map(|s| s.count).sum()
    }

    /// Function names of a sample, root first, inlined frames expanded.
    pub fn function_names_root_first(&self, sample: &ReportSample) -> Vec<&str> {
        let mut out = Vec::with_capacity(sample.stack.len());
        for &loc in sample.stack.iter().rev() {
            let Some(location) = self.locations.get(loc) else {
                continue;
            };
            for line in location.lines.iter().rev() {
                if let Some(f) = self.functions.get(line.function) {
                    out.push(&*f.name);
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inlined_lines_expand_outermost_first() {
        let r = Report {
            frequency_hz: 100,
            functions: vec![
                Function {
                    name: "main".into(),
                    file: None,
                },
                Function {
                    name: "inner".into(),
                    file: None,
                },
                Function {
                    name: "outer".into(),
                    file: None,
                },
            ],
            locations: vec![
                Location {
                    mapping: None,
                    address: 1,
                    lines: vec![Line {
                        function: 0,
                        line: 0,
                    }],
                    kernel: false,
                },
                // `inner` was inlined into `outer`.
                Location {
                    mapping: None,
                    address: 2,
                    lines: vec![
                        Line {
                            function: 1,
                            line: 3,
                        },
                        Line {
                            function: 2,
                            line: 9,
                        },
                    ],
                    kernel: false,
                },
            ],
            samples: vec![ReportSample {
                stack: vec![1, 0],
                pid: 1,
                tid: 1,
                process_name: "p".into(),
                thread_name: "p".into(),
                resource: 0,
                count: 2,
            }],
            ..Default::default()
        };
        assert_eq!(r.period_ns(), 10_000_000);
        assert_eq!(
            r.function_names_root_first(&r.samples[0]),
            vec!["main", "outer", "inner"]
        );
        assert_eq!(r.total_samples(), 2);
    }
}
