//! OpenTelemetry Profiles (OTLP, proto `v1development`) from a report.
//!
//! One `ResourceProfiles` per container plus one for host processes, each
//! with one profile of `samples`/`count` and period `cpu`/`nanoseconds`.
//! All tables live in one dictionary shared by every resource; each table
//! is deduplicated and starts with its zero value, as the protocol
//! requires (`string_table[0] == ""`). Per-sample attributes name the
//! process and thread; locations say whether they are kernel or native
//! (user) frames.

use std::collections::HashMap;
use std::hash::Hash;

use hearth_profile::Report;
use opentelemetry_proto::tonic::collector::profiles::v1development::ExportProfilesServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::profiles::v1development as pb;
use opentelemetry_proto::tonic::resource::v1::Resource as PbResource;
use prost::Message;

/// Location attribute telling kernel frames from user ones.
pub const FRAME_TYPE_KEY: &str = "profile.frame.type";
/// Mapping attribute carrying the GNU build id (hex).
pub const BUILD_ID_KEY: &str = "process.executable.build_id.gnu";

/// A table whose index 0 holds the zero value and whose entries are unique.
struct Table<T: Clone + Eq + Hash + Default> {
    items: Vec<T>,
    index: HashMap<T, i32>,
}

impl<T: Clone + Eq + Hash + Default> Table<T> {
    fn new() -> Self {
        let zero = T::default();
        let mut index = HashMap::new();
        index.insert(zero.clone(), 0);
        Table {
            items: vec![zero],
            index,
        }
    }

    fn intern(&mut self, item: T) -> i32 {
        if let Some(&i) = self.index.get(&item) {
            return i;
        }
        let i = self.items.len() as i32;
        self.items.push(item.clone());
        self.index.insert(item, i);
        i
    }
}

/// Hashable forms of the proto messages (prost types are not `Hash`).
#[derive(Clone, PartialEq, Eq, Hash, Default)]
struct MappingKey {
    filename: i32,
    attributes: Vec<i32>,
}

#[derive(Clone, PartialEq, Eq, Hash, Default)]
struct FunctionKey {
    name: i32,
    filename: i32,
}

#[derive(Clone, PartialEq, Eq, Hash, Default)]
struct LocationKey {
    mapping: i32,
    address: u64,
    lines: Vec<(i32, i64)>,
    attributes: Vec<i32>,
}

#[derive(Clone, PartialEq, Eq, Hash, Default)]
enum AttrValue {
    #[default]
    Empty,
    Str(String),
    Int(i64),
}

#[derive(Clone, PartialEq, Eq, Hash, Default)]
struct AttributeKey {
    key: i32,
    value: AttrValue,
}

struct Dictionary {
    strings: Table<String>,
    mappings: Table<MappingKey>,
    functions: Table<FunctionKey>,
    locations: Table<LocationKey>,
    attributes: Table<AttributeKey>,
    stacks: Table<Vec<i32>>,
}

impl Dictionary {
    fn string(&mut self, s: &str) -> i32 {
        match self.strings.index.get(s) {
            Some(&i) => i,
            None => self.strings.intern(s.to_string()),
        }
    }

    fn attribute(&mut self, key: &str, value: AttrValue) -> i32 {
        let key = self.string(key);
        self.attributes.intern(AttributeKey { key, value })
    }

    fn finish(self) -> pb::ProfilesDictionary {
        let any = |v: &AttrValue| match v {
            AttrValue::Empty => None,
            AttrValue::Str(s) => Some(AnyValue {
                value: Some(any_value::Value::StringValue(s.clone())),
            }),
            AttrValue::Int(i) => Some(AnyValue {
                value: Some(any_value::Value::IntValue(*i)),
            }),
        };
        pb::ProfilesDictionary {
            mapping_table: self
                .mappings
                .items
                .iter()
                .map(|m| pb::Mapping {
                    filename_strindex: m.filename,
                    attribute_indices: m.attributes.clone(),
                    ..Default::default()
                })
                .collect(),
            location_table: self
                .locations
                .items
                .iter()
                .map(|l| pb::Location {
                    mapping_index: l.mapping,
                    address: l.address,
                    lines: l
                        .lines
                        .iter()
                        .map(|&(function_index, line)| pb::Line {
                            function_index,
                            line,
                            column: 0,
                        })
                        .collect(),
                    attribute_indices: l.attributes.clone(),
                })
                .collect(),
            function_table: self
                .functions
                .items
                .iter()
                .map(|f| pb::Function {
                    name_strindex: f.name,
                    system_name_strindex: f.name,
                    filename_strindex: f.filename,
                    start_line: 0,
                })
                .collect(),
            link_table: vec![pb::Link::default()],
            string_table: self.strings.items,
            attribute_table: self
                .attributes
                .items
                .iter()
                .map(|a| pb::KeyValueAndUnit {
                    key_strindex: a.key,
                    value: any(&a.value),
                    unit_strindex: 0,
                })
                .collect(),
            stack_table: self
                .stacks
                .items
                .into_iter()
                .map(|location_indices| pb::Stack { location_indices })
                .collect(),
        }
    }
}

/// Builds the export request (equivalently `ProfilesData`: same fields).
pub fn build_request(report: &Report) -> ExportProfilesServiceRequest {
    let mut d = Dictionary {
        strings: Table::new(),
        mappings: Table::new(),
        functions: Table::new(),
        locations: Table::new(),
        attributes: Table::new(),
        stacks: Table::new(),
    };
    // Report indices -> dictionary indices, computed once.
    let mappings: Vec<i32> = report
        .mappings
        .iter()
        .map(|m| {
            let filename = d.string(&m.path);
            let attributes = match &m.build_id {
                Some(id) => vec![d.attribute(BUILD_ID_KEY, AttrValue::Str(id.clone()))],
                None => Vec::new(),
            };
            d.mappings.intern(MappingKey {
                filename,
                attributes,
            })
        })
        .collect();
    let functions: Vec<i32> = report
        .functions
        .iter()
        .map(|f| {
            let name = d.string(&f.name);
            let filename = f.file.as_deref().map(|p| d.string(p)).unwrap_or(0);
            d.functions.intern(FunctionKey { name, filename })
        })
        .collect();
    let kernel_attr = d.attribute(FRAME_TYPE_KEY, AttrValue::Str("kernel".into()));
    let native_attr = d.attribute(FRAME_TYPE_KEY, AttrValue::Str("native".into()));
    let locations: Vec<i32> = report
        .locations
        .iter()
        .map(|l| {
            let key = LocationKey {
                mapping: l
                    .mapping
                    .and_then(|m| mappings.get(m).copied())
                    .unwrap_or(0),
                address: l.address,
                lines: l
                    .lines
                    .iter()
                    .filter_map(|line| Some((*functions.get(line.function)?, i64::from(line.line))))
                    .collect(),
                attributes: vec![if l.kernel { kernel_attr } else { native_attr }],
            };
            d.locations.intern(key)
        })
        .collect();

    let sample_type = pb::ValueType {
        type_strindex: d.string("samples"),
        unit_strindex: d.string("count"),
    };
    let period_type = pb::ValueType {
        type_strindex: d.string("cpu"),
        unit_strindex: d.string("nanoseconds"),
    };
    let mut per_resource: Vec<Vec<pb::Sample>> = vec![Vec::new(); report.resources.len().max(1)];
    for s in report.samples.iter().filter(|s| s.count > 0) {
        let stack: Vec<i32> = s
            .stack
            .iter()
            .filter_map(|&l| locations.get(l).copied())
            .collect();
        let stack_index = d.stacks.intern(stack);
        let attribute_indices = vec![
            d.attribute("process.pid", AttrValue::Int(i64::from(s.pid))),
            d.attribute(
                "process.executable.name",
                AttrValue::Str(s.process_name.to_string()),
            ),
            d.attribute("thread.id", AttrValue::Int(i64::from(s.tid))),
            d.attribute("thread.name", AttrValue::Str(s.thread_name.to_string())),
        ];
        let slot = if s.resource < per_resource.len() {
            s.resource
        } else {
            0
        };
        per_resource[slot].push(pb::Sample {
            stack_index,
            attribute_indices,
            link_index: 0,
            values: vec![i64::try_from(s.count).unwrap_or(i64::MAX)],
            timestamps_unix_nano: Vec::new(),
        });
    }
    let scope = InstrumentationScope {
        name: "hearth".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        ..Default::default()
    };
    let resource_profiles = per_resource
        .into_iter()
        .enumerate()
        .filter(|(_, samples)| !samples.is_empty())
        .map(|(i, samples)| {
            let attributes = report
                .resources
                .get(i)
                .map(|r| {
                    r.attributes
                        .iter()
                        .map(|(k, v)| KeyValue {
                            key: k.clone(),
                            value: Some(AnyValue {
                                value: Some(any_value::Value::StringValue(v.clone())),
                            }),
                            ..Default::default()
                        })
                        .collect()
                })
                .unwrap_or_default();
            pb::ResourceProfiles {
                resource: Some(PbResource {
                    attributes,
                    ..Default::default()
                }),
                scope_profiles: vec![pb::ScopeProfiles {
                    scope: Some(scope.clone()),
                    profiles: vec![pb::Profile {
                        sample_type: Some(sample_type),
                        samples,
                        time_unix_nano: report.start_unix_ns,
                        duration_nano: report.duration_ns,
                        period_type: Some(period_type),
                        period: i64::try_from(report.period_ns()).unwrap_or(i64::MAX),
                        profile_id: profile_id(report, i),
                        ..Default::default()
                    }],
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }
        })
        .collect();
    ExportProfilesServiceRequest {
        resource_profiles,
        dictionary: Some(d.finish()),
    }
}

/// A 16-byte id, unique per window and resource.
fn profile_id(report: &Report, resource: usize) -> Vec<u8> {
    use std::hash::{BuildHasher, Hasher};
    let mut out = Vec::with_capacity(16);
    for salt in [0u64, 1] {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(report.start_unix_ns);
        h.write_usize(resource);
        h.write_u64(salt);
        out.extend_from_slice(&h.finish().to_le_bytes());
    }
    out
}

/// The request, protobuf-encoded.
pub fn encode_otlp(report: &Report) -> Vec<u8> {
    build_request(report).encode_to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata::two_processes;
    use opentelemetry_proto::tonic::profiles::v1development::ProfilesData;

    #[test]
    fn dictionary_invariants_and_indices_in_range() {
        let report = two_processes();
        let bytes = encode_otlp(&report);
        // The request and ProfilesData share field numbers: decode as both.
        let data = ProfilesData::decode(bytes.as_slice()).unwrap();
        let d = data.dictionary.as_ref().unwrap();
        assert_eq!(d.string_table[0], "");
        assert_eq!(d.mapping_table[0], pb::Mapping::default());
        assert_eq!(d.location_table[0], pb::Location::default());
        assert_eq!(d.function_table[0], pb::Function::default());
        assert_eq!(d.link_table[0], pb::Link::default());
        assert_eq!(d.attribute_table[0], pb::KeyValueAndUnit::default());
        assert_eq!(d.stack_table[0], pb::Stack::default());
        let unique =
            |v: Vec<String>| v.len() == v.iter().collect::<std::collections::HashSet<_>>().len();
        assert!(unique(d.string_table.clone()));
        assert!(unique(
            d.stack_table
                .iter()
                .map(|s| format!("{:?}", s.location_indices))
                .collect()
        ));
        assert!(unique(
            d.location_table.iter().map(|l| format!("{l:?}")).collect()
        ));
        let s = d.string_table.len() as i32;
        for f in &d.function_table {
            assert!(f.name_strindex < s && f.filename_strindex < s);
        }
        for l in &d.location_table {
            assert!((l.mapping_index as usize) < d.mapping_table.len());
            assert!(l
                .lines
                .iter()
                .all(|x| (x.function_index as usize) < d.function_table.len()));
            assert!(l
                .attribute_indices
                .iter()
                .all(|&a| (a as usize) < d.attribute_table.len()));
        }
        for st in &d.stack_table {
            assert!(st
                .location_indices
                .iter()
                .all(|&i| i > 0 && (i as usize) < d.location_table.len()));
        }
        let mut total = 0;
        for rp in &data.resource_profiles {
            for p in &rp.scope_profiles[0].profiles {
                let st = p.sample_type.unwrap();
                assert_eq!(d.string_table[st.type_strindex as usize], "samples");
                assert_eq!(d.string_table[st.unit_strindex as usize], "count");
                let pt = p.period_type.unwrap();
                assert_eq!(d.string_table[pt.type_strindex as usize], "cpu");
                assert_eq!(d.string_table[pt.unit_strindex as usize], "nanoseconds");
                assert_eq!(p.period, 10_000_000);
                assert_eq!(p.profile_id.len(), 16);
                for smp in &p.samples {
                    assert!(
                        (smp.stack_index as usize) < d.stack_table.len() && smp.stack_index > 0
                    );
                    let keys: Vec<&str> = smp
                        .attribute_indices
                        .iter()
                        .map(|&a| {
                            d.string_table[d.attribute_table[a as usize].key_strindex as usize]
                                .as_str()
                        })
                        .collect();
                    assert_eq!(
                        keys,
                        [
                            "process.pid",
                            "process.executable.name",
                            "thread.id",
                            "thread.name"
                        ]
                    );
                    total += smp.values[0] as u64;
                }
            }
        }
        assert_eq!(total, report.total_samples());
        // Kernel frames are marked as such.
        let kernel_frames = d
            .location_table
            .iter()
            .filter(|l| {
                l.attribute_indices.iter().any(|&a| {
                    let kv = &d.attribute_table[a as usize];
                    d.string_table[kv.key_strindex as usize] == FRAME_TYPE_KEY
                        && kv.value
                            == Some(AnyValue {
                                value: Some(any_value::Value::StringValue("kernel".into())),
                            })
                })
            })
            .count();
        assert_eq!(
            kernel_frames,
            report.locations.iter().filter(|l| l.kernel).count()
        );
    }
}
