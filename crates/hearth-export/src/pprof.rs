//! pprof encoding: a gzip-compressed `Profile` protobuf (`.pb.gz`).
//!
//! The report's tables map one to one onto the profile's: report index `i`
//! becomes id `i + 1`. Each sample carries two values, `samples/count` and
//! `cpu/nanoseconds` (count times the sampling period), and the labels
//! `pid`, `tid`, `process_name` and `thread_name`.

pub mod proto;

use std::collections::HashMap;
use std::io::{self, Write};

use flate2::write::GzEncoder;
use flate2::Compression;
use hearth_profile::Report;
use prost::Message;

/// File name given to the kernel mapping when the report has none.
pub const KERNEL_MAPPING_NAME: &str = "[kernel.kallsyms]";

/// Encodes `report` as an uncompressed pprof protobuf.
pub fn encode_pprof(report: &Report) -> Vec<u8> {
    build_profile(report).encode_to_vec()
}

/// Writes `report` as a gzip-compressed pprof protobuf, the form pprof
/// tools expect in `.pb.gz` files.
pub fn write_pprof_gz(report: &Report, w: impl Write) -> io::Result<()> {
    let mut gz = GzEncoder::new(w, Compression::default());
    gz.write_all(&encode_pprof(report))?;
    gz.finish()?;
    Ok(())
}

/// Builds the profile message for `report`.
///
/// Indices that point outside the report's tables are dropped: a dangling
/// stack entry or line is left out, a dangling mapping becomes "no mapping"
/// (or the kernel mapping for kernel locations).
pub fn build_profile(report: &Report) -> proto::Profile {
    let mut strings = StringTable::new();
    let period = report.period_ns();

    let functions = report
        .functions
        .iter()
        .zip(1u64..)
        .map(|(f, id)| {
            let name = strings.intern(&f.name);
            proto::Function {
                id,
                name,
                system_name: name,
                filename: f.file.as_deref().map_or(0, |file| strings.intern(file)),
                start_line: 0,
            }
        })
        .collect();

    let mut mappings = MappingTable::new(report, &mut strings);
    let location = report
        .locations
        .iter()
        .zip(1u64..)
        .map(|(loc, id)| {
            let line: Vec<proto::Line> = loc
                .lines
                .iter()
                .filter(|l| l.function < report.functions.len())
                .map(|l| proto::Line {
                    function_id: l.function as u64 + 1,
                    line: i64::from(l.line),
                    column: 0,
                })
                .collect();
            let mapping_id = mappings.record_location(report, loc, &line, &mut strings);
            proto::Location {
                id,
                mapping_id,
                address: loc.address,
                line,
                is_folded: false,
            }
        })
        .collect();

    let sample = encode_samples(report, &mut strings);

    let mut profile = proto::Profile {
        sample_type: vec![
            strings.value_type("samples", "count"),
            strings.value_type("cpu", "nanoseconds"),
        ],
        sample,
        mapping: mappings.finish(),
        location,
        function: functions,
        time_nanos: to_i64(report.start_unix_ns),
        duration_nanos: to_i64(report.duration_ns),
        period_type: Some(strings.value_type("cpu", "nanoseconds")),
        period: to_i64(period),
        default_sample_type: strings.intern("cpu"),
        ..Default::default()
    };
    if report.lost_samples > 0 {
        let comment = format!(
            "{} records (samples and process events alike) were lost because a ring buffer \
             was full",
            report.lost_samples
        );
        profile.comment.push(strings.intern(&comment));
    }
    profile.string_table = strings.table;
    profile
}

fn encode_samples(report: &Report, strings: &mut StringTable) -> Vec<proto::Sample> {
    let period = report.period_ns();
    let keys = [
        strings.intern("pid"),
        strings.intern("tid"),
        strings.intern("process_name"),
        strings.intern("thread_name"),
    ];
    let num = |key, value: u32| proto::Label {
        key,
        num: i64::from(value),
        ..Default::default()
    };
    report
        .samples
        .iter()
        .filter(|s| s.count > 0)
        .map(|s| proto::Sample {
            location_id: s
                .stack
                .iter()
                .filter(|&&loc| loc < report.locations.len())
                .map(|&loc| loc as u64 + 1)
                .collect(),
            value: vec![to_i64(s.count), to_i64(s.count.saturating_mul(period))],
            label: {
                let mut labels = vec![
                    num(keys[0], s.pid),
                    num(keys[1], s.tid),
                    proto::Label {
                        key: keys[2],
                        str: strings.intern(&s.process_name),
                        ..Default::default()
                    },
                    proto::Label {
                        key: keys[3],
                        str: strings.intern(&s.thread_name),
                        ..Default::default()
                    },
                ];
                // Grouped by container or pod: the resource's attributes
                // (container.id, k8s.pod.name, ...) become labels.
                if report.group_by != hearth_profile::GroupBy::Process {
                    if let Some(r) = report.resource_of(s) {
                        for (k, v) in &r.attributes {
                            labels.push(proto::Label {
                                key: strings.intern(k),
                                str: strings.intern(v),
                                ..Default::default()
                            });
                        }
                    }
                }
                labels
            },
        })
        .collect()
}

/// Clamps to the signed range protobuf `int64` fields use.
fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Deduplicating string table whose entry 0 is `""`.
struct StringTable {
    table: Vec<String>,
    index: HashMap<String, i64>,
}

impl StringTable {
    fn new() -> Self {
        StringTable {
            table: vec![String::new()],
            index: HashMap::from([(String::new(), 0)]),
        }
    }

    fn intern(&mut self, s: &str) -> i64 {
        if let Some(&i) = self.index.get(s) {
            return i;
        }
        let i = self.table.len() as i64;
        self.table.push(s.to_string());
        self.index.insert(s.to_string(), i);
        i
    }

    fn value_type(&mut self, ty: &str, unit: &str) -> proto::ValueType {
        proto::ValueType {
            r#type: self.intern(ty),
            unit: self.intern(unit),
        }
    }
}

/// Builds the mapping messages while locations are encoded, so that each
/// mapping's address range and `has_*` flags describe its locations.
struct MappingTable {
    mappings: Vec<proto::Mapping>,
    /// Per mapping: does every location in it resolve to a function?
    all_symbolized: Vec<bool>,
    /// Index of the mapping used for kernel locations without a valid one,
    /// chosen (or created) on first use.
    kernel: Option<usize>,
}

impl MappingTable {
    fn new(report: &Report, strings: &mut StringTable) -> Self {
        let mappings: Vec<proto::Mapping> = report
            .mappings
            .iter()
            .zip(1u64..)
            .map(|(m, id)| {
                let path = if m.kernel && m.path.is_empty() {
                    KERNEL_MAPPING_NAME
                } else {
                    &m.path
                };
                proto::Mapping {
                    id,
                    filename: strings.intern(path),
                    build_id: m.build_id.as_deref().map_or(0, |b| strings.intern(b)),
                    ..Default::default()
                }
            })
            .collect();
        MappingTable {
            all_symbolized: vec![true; mappings.len()],
            kernel: report.mappings.iter().position(|m| m.kernel),
            mappings,
        }
    }

    /// Returns the mapping id for `loc` and folds the location into that
    /// mapping's range and flags.
    fn record_location(
        &mut self,
        report: &Report,
        loc: &hearth_profile::Location,
        lines: &[proto::Line],
        strings: &mut StringTable,
    ) -> u64 {
        let index = match loc.mapping {
            Some(i) if i < self.mappings.len() => i,
            _ if loc.kernel => self.kernel_mapping(strings),
            _ => return 0,
        };
        let has_filenames = loc.lines.iter().any(|l| {
            report
                .functions
                .get(l.function)
                .is_some_and(|f| f.file.is_some())
        });
        let m = &mut self.mappings[index];
        m.memory_limit = m.memory_limit.max(loc.address.saturating_add(1));
        m.has_filenames |= has_filenames;
        m.has_line_numbers |= lines.iter().any(|l| l.line > 0);
        m.has_inline_frames |= lines.len() > 1;
        self.all_symbolized[index] &= !lines.is_empty();
        m.has_functions = self.all_symbolized[index];
        m.id
    }

    fn kernel_mapping(&mut self, strings: &mut StringTable) -> usize {
        if let Some(i) = self.kernel {
            return i;
        }
        let i = self.mappings.len();
        self.mappings.push(proto::Mapping {
            id: i as u64 + 1,
            filename: strings.intern(KERNEL_MAPPING_NAME),
            ..Default::default()
        });
        self.all_symbolized.push(true);
        self.kernel = Some(i);
        i
    }

    fn finish(self) -> Vec<proto::Mapping> {
        self.mappings
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata;
    use flate2::read::GzDecoder;
    use std::collections::HashSet;
    use std::io::Read;

    fn decode_gz(report: &Report) -> proto::Profile {
        let mut gz = Vec::new();
        write_pprof_gz(report, &mut gz).unwrap();
        let mut raw = Vec::new();
        GzDecoder::new(&gz[..]).read_to_end(&mut raw).unwrap();
        assert_eq!(raw, encode_pprof(report));
        proto::Profile::decode(&raw[..]).unwrap()
    }

    fn s(p: &proto::Profile, i: i64) -> &str {
        &p.string_table[usize::try_from(i).unwrap()]
    }

    /// Checks the invariants pprof readers enforce: unique non-zero ids,
    /// every referenced id present, every string index in range.
    fn assert_consistent(p: &proto::Profile) {
        assert_eq!(p.string_table.first().map(String::as_str), Some(""));
        let unique: HashSet<&String> = p.string_table.iter().collect();
        assert_eq!(
            unique.len(),
            p.string_table.len(),
            "strings are deduplicated"
        );
        let in_range = |i: i64| usize::try_from(i).is_ok_and(|i| i < p.string_table.len());

        let ids = |v: Vec<u64>| {
            assert!(v.iter().all(|&id| id != 0), "id 0 is reserved");
            let set: HashSet<u64> = v.iter().copied().collect();
            assert_eq!(set.len(), v.len(), "ids are unique");
            set
        };
        let mappings = ids(p.mapping.iter().map(|m| m.id).collect());
        let functions = ids(p.function.iter().map(|f| f.id).collect());
        let locations = ids(p.location.iter().map(|l| l.id).collect());

        for m in &p.mapping {
            assert!(in_range(m.filename) && in_range(m.build_id));
        }
        for f in &p.function {
            assert!(in_range(f.name) && in_range(f.system_name) && in_range(f.filename));
        }
        for l in &p.location {
            assert!(l.mapping_id == 0 || mappings.contains(&l.mapping_id));
            for line in &l.line {
                assert!(functions.contains(&line.function_id));
            }
        }
        for sample in &p.sample {
            assert_eq!(sample.value.len(), p.sample_type.len());
            for id in &sample.location_id {
                assert!(locations.contains(id));
            }
            for label in &sample.label {
                assert!(in_range(label.key) && in_range(label.str));
            }
        }
        for c in &p.comment {
            assert!(in_range(*c));
        }
    }

    fn location(p: &proto::Profile, id: u64) -> &proto::Location {
        p.location.iter().find(|l| l.id == id).unwrap()
    }

    fn mapping_name(p: &proto::Profile, id: u64) -> &str {
        let m = p.mapping.iter().find(|m| m.id == id).unwrap();
        s(p, m.filename)
    }

    fn function_names<'a>(p: &'a proto::Profile, loc: &proto::Location) -> Vec<&'a str> {
        loc.line
            .iter()
            .map(|l| {
                let f = p.function.iter().find(|f| f.id == l.function_id).unwrap();
                s(p, f.name)
            })
            .collect()
    }

    #[test]
    fn header_fields_and_sample_types() {
        let p = decode_gz(&testdata::two_processes());
        assert_consistent(&p);
        let types: Vec<(&str, &str)> = p
            .sample_type
            .iter()
            .map(|t| (s(&p, t.r#type), s(&p, t.unit)))
            .collect();
        assert_eq!(types, vec![("samples", "count"), ("cpu", "nanoseconds")]);
        let period_type = p.period_type.as_ref().unwrap();
        assert_eq!(
            (s(&p, period_type.r#type), s(&p, period_type.unit)),
            ("cpu", "nanoseconds")
        );
        assert_eq!(p.period, 10_000_000);
        assert_eq!(p.time_nanos, 1_700_000_000_000_000_000);
        assert_eq!(p.duration_nanos, 2_500_000_000);
        assert_eq!(s(&p, p.default_sample_type), "cpu");
        assert_eq!(p.comment.len(), 1);
        assert!(
            s(&p, p.comment[0]).contains("7 records (samples and process events alike) were lost")
        );
    }

    #[test]
    fn samples_keep_stacks_values_and_labels() {
        let report = testdata::two_processes();
        let p = decode_gz(&report);
        assert_eq!(p.sample.len(), report.samples.len());

        // Leaf first, report index + 1.
        assert_eq!(p.sample[2].location_id, vec![4, 5, 3, 1, 6]);
        assert_eq!(p.sample[0].value, vec![5, 50_000_000]);
        assert_eq!(p.sample[3].value, vec![4, 40_000_000]);
        let total: i64 = p.sample.iter().map(|s| s.value[0]).sum();
        assert_eq!(total, 15);

        let labels = |i: usize| -> Vec<(String, String)> {
            p.sample[i]
                .label
                .iter()
                .map(|l| {
                    let value = if l.str != 0 {
                        s(&p, l.str).to_string()
                    } else {
                        l.num.to_string()
                    };
                    (s(&p, l.key).to_string(), value)
                })
                .collect()
        };
        let expect = |pairs: [(&str, &str); 4]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert_eq!(
            labels(1),
            expect([
                ("pid", "100"),
                ("tid", "101"),
                ("process_name", "app"),
                ("thread_name", "worker")
            ])
        );
        // pprof keeps names verbatim; only the folded format sanitizes.
        assert_eq!(
            labels(4),
            expect([
                ("pid", "200"),
                ("tid", "201"),
                ("process_name", "db"),
                ("thread_name", "io;thread")
            ])
        );
        for sample in &p.sample {
            let pid = sample.label.iter().find(|l| s(&p, l.key) == "pid").unwrap();
            assert_eq!(pid.str, 0, "numeric labels carry no string");
        }
    }

    #[test]
    fn locations_keep_inlined_lines_innermost_first() {
        let p = decode_gz(&testdata::two_processes());
        let inlined = location(&p, 2);
        assert_eq!(function_names(&p, inlined), vec!["hash", "work"]);
        assert_eq!(
            inlined.line.iter().map(|l| l.line).collect::<Vec<_>>(),
            vec![7, 42]
        );
        assert_eq!(inlined.address, 0x2000);
        assert_eq!(mapping_name(&p, inlined.mapping_id), "/usr/bin/app");

        let main = p.function.iter().find(|f| s(&p, f.name) == "main").unwrap();
        assert_eq!(s(&p, main.filename), "src/main.rs");
        assert_eq!(main.system_name, main.name);
    }

    #[test]
    fn mappings_describe_their_locations() {
        let p = decode_gz(&testdata::two_processes());
        assert_eq!(p.mapping.len(), 3);
        let app = &p.mapping[0];
        assert_eq!(s(&p, app.filename), "/usr/bin/app");
        assert_eq!(s(&p, app.build_id), "abcd1234");
        assert!(
            app.has_functions && app.has_filenames && app.has_line_numbers && app.has_inline_frames
        );
        assert_eq!(app.memory_limit, 0x2001);

        let libc = &p.mapping[1];
        assert_eq!(libc.build_id, 0);
        assert!(libc.has_functions);
        assert!(!libc.has_filenames && !libc.has_line_numbers && !libc.has_inline_frames);

        // Both kernel locations land in the report's kernel mapping, also the
        // one whose mapping index is missing.
        let kernel = &p.mapping[2];
        assert_eq!(s(&p, kernel.filename), "[kernel.kallsyms]");
        assert_eq!(location(&p, 4).mapping_id, kernel.id);
        assert_eq!(location(&p, 5).mapping_id, kernel.id);
        assert_eq!(location(&p, 4).address, testdata::KERNEL_ADDR);
        assert_eq!(function_names(&p, location(&p, 4)), vec!["do_syscall_64"]);
    }

    #[test]
    fn kernel_mapping_is_created_when_the_report_has_none() {
        let mut report = testdata::two_processes();
        report.mappings.pop();
        report.locations[3].mapping = None;
        let p = decode_gz(&report);
        assert_consistent(&p);
        assert_eq!(p.mapping.len(), 3);
        let kernel = p.mapping.last().unwrap();
        assert_eq!(s(&p, kernel.filename), KERNEL_MAPPING_NAME);
        assert_eq!(location(&p, 4).mapping_id, kernel.id);
        assert_eq!(location(&p, 5).mapping_id, kernel.id);
        assert_eq!(kernel.memory_limit, testdata::KERNEL_ADDR + 0x41);
    }

    #[test]
    fn dangling_indices_are_dropped() {
        let mut report = testdata::two_processes();
        report.samples[0].stack.push(99);
        report.locations[0].mapping = Some(42);
        report.locations[0].lines.push(hearth_profile::Line {
            function: 77,
            line: 1,
        });
        report.locations[2].lines.clear();
        report.samples[4].count = 0;
        let p = decode_gz(&report);
        assert_consistent(&p);
        assert_eq!(p.sample[0].location_id, vec![2, 1, 6]);
        assert_eq!(p.sample.len(), 4, "zero-count samples are skipped");
        assert_eq!(location(&p, 1).mapping_id, 0);
        assert_eq!(function_names(&p, location(&p, 1)), vec!["main"]);
        assert!(
            !p.mapping[1].has_functions,
            "libc has a location without lines"
        );
    }

    #[test]
    fn empty_report_is_a_valid_profile() {
        let p = decode_gz(&Report::default());
        assert_consistent(&p);
        assert!(p.sample.is_empty() && p.location.is_empty() && p.mapping.is_empty());
        assert_eq!(p.period, 0);
        assert!(p.comment.is_empty());
    }
}
