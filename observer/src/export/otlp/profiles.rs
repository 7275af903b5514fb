//! An episode's CPU profile as an OTLP profiles request (proto 1.10.0,
//! `v1development`): our pprof `Profile` in the dictionary form, every table
//! shared through `ProfilesDictionary`, each with its zero entry at index 0
//! as the spec asks. Every sample links to the episode's trace and root span.
//!
//! No SDK builds these (opentelemetry-rust has the messages only); the
//! sending is `profile_export`.

use std::{collections::HashMap, sync::Arc};

use opentelemetry_proto::tonic::{
    collector::profiles::v1development::ExportProfilesServiceRequest,
    common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value},
    profiles::v1development::{
        Function, KeyValueAndUnit, Line, Link, Location, Mapping, Profile, ProfilesDictionary, ResourceProfiles,
        Sample, ScopeProfiles, Stack, ValueType,
    },
    resource::v1::Resource,
};

use crate::{profile::pprof, workload::Identity};

/// What ties a profile to its episode.
#[derive(Clone, Debug)]
pub struct EpisodeLink {
    pub trace_id: [u8; 16],
    /// The episode's root span.
    pub span_id: [u8; 8],
    /// The `ProfileRef.id` the root span names.
    pub profile_id: [u8; 16],
    pub workload: Arc<Identity>,
}

/// The sample attribute for pprof's `pid` label.
const PROCESS_PID: &str = "process.pid";

/// One request: `resource` (the episode's workload, as its trace), one scope,
/// one profile.
pub fn request(profile: &pprof::Profile, link: &EpisodeLink, resource: Vec<KeyValue>) -> ExportProfilesServiceRequest {
    let (dictionary, profile) = convert(profile, link);
    ExportProfilesServiceRequest {
        resource_profiles: vec![ResourceProfiles {
            resource: Some(Resource { attributes: resource, ..Default::default() }),
            scope_profiles: vec![ScopeProfiles {
                scope: Some(InstrumentationScope {
                    name: "observer".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    ..Default::default()
                }),
                profiles: vec![profile],
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
        dictionary: Some(dictionary),
    }
}

/// A pprof index (i64, or a 1-based id) as an OTLP one (i32); an index past
/// i32 cannot come from a profile we built, and maps to the zero entry.
fn index<T: TryInto<i32>>(i: T) -> i32 {
    i.try_into().unwrap_or(0)
}

/// The dictionary and the profile. pprof's two values become one, its main
/// one (OTLP has one sample type per profile): CPU samples, the count the
/// span's `observer.profile.cpu.samples` says (the time is the count times
/// `period`), or allocated bytes.
pub fn convert(p: &pprof::Profile, link: &EpisodeLink) -> (ProfilesDictionary, Profile) {
    let main = p.main_value();
    let mut d = ProfilesDictionary {
        mapping_table: vec![Mapping::default()],
        location_table: vec![Location::default()],
        function_table: vec![Function::default()],
        link_table: vec![Link::default()],
        string_table: p.string_table.clone(),
        attribute_table: vec![KeyValueAndUnit::default()],
        stack_table: vec![Stack::default()],
    };
    if d.string_table.first().is_none_or(|s| !s.is_empty()) {
        // Our pprof tables start with "" too; never shift a foreign one.
        d.string_table.insert(0, String::new());
    }
    let shift = i64::from(d.string_table.len() != p.string_table.len());
    let s = |i: i64| index(i + shift);
    let mut strings: HashMap<String, i32> = HashMap::new();
    let mut string = |d: &mut ProfilesDictionary, text: &str| -> i32 {
        if let Some(&i) = strings.get(text) {
            return i;
        }
        let i = index(d.string_table.len());
        d.string_table.push(text.to_string());
        strings.insert(text.to_string(), i);
        i
    };

    let mut mappings = HashMap::new();
    for m in &p.mapping {
        mappings.insert(m.id, index(d.mapping_table.len()));
        d.mapping_table.push(Mapping {
            memory_start: m.memory_start,
            memory_limit: m.memory_limit,
            file_offset: m.file_offset,
            filename_strindex: s(m.filename),
            attribute_indices: Vec::new(),
        });
    }
    let mut functions = HashMap::new();
    for f in &p.function {
        functions.insert(f.id, index(d.function_table.len()));
        d.function_table.push(Function {
            name_strindex: s(f.name),
            system_name_strindex: s(f.system_name),
            filename_strindex: s(f.filename),
            start_line: 0,
        });
    }
    let mut locations = HashMap::new();
    for l in &p.location {
        locations.insert(l.id, index(d.location_table.len()));
        d.location_table.push(Location {
            mapping_index: mappings.get(&l.mapping_id).copied().unwrap_or(0),
            address: l.address,
            lines: l
                .line
                .iter()
                .map(|line| Line {
                    function_index: functions.get(&line.function_id).copied().unwrap_or(0),
                    line: line.line,
                    column: 0,
                })
                .collect(),
            attribute_indices: Vec::new(),
        });
    }
    d.link_table.push(Link { trace_id: link.trace_id.to_vec(), span_id: link.span_id.to_vec() });
    let link_index = 1;

    let pid_key = p.string_table.iter().position(|t| t == "pid").map(|i| i as i64);
    let pid_attr_key = string(&mut d, PROCESS_PID);
    let mut stacks: HashMap<Vec<i32>, i32> = HashMap::new();
    let mut pids: HashMap<i64, i32> = HashMap::new();
    let mut samples = Vec::with_capacity(p.sample.len());
    for sample in &p.sample {
        let ids: Vec<i32> = sample.location_id.iter().map(|id| locations.get(id).copied().unwrap_or(0)).collect();
        let next = index(d.stack_table.len());
        let stack_index = *stacks.entry(ids.clone()).or_insert_with(|| {
            d.stack_table.push(Stack { location_indices: ids });
            next
        });
        let mut attribute_indices = Vec::new();
        if let Some(label) = sample.label.iter().find(|l| Some(l.key) == pid_key) {
            let next = index(d.attribute_table.len());
            let i = *pids.entry(label.num).or_insert_with(|| {
                d.attribute_table.push(KeyValueAndUnit {
                    key_strindex: pid_attr_key,
                    value: Some(AnyValue { value: Some(any_value::Value::IntValue(label.num)) }),
                    unit_strindex: 0,
                });
                next
            });
            attribute_indices.push(i);
        }
        samples.push(Sample {
            stack_index,
            attribute_indices,
            link_index,
            values: vec![sample.value.get(main).copied().unwrap_or(0)],
            timestamps_unix_nano: Vec::new(),
        });
    }
    let value_type =
        |t: Option<&pprof::ValueType>| t.map(|t| ValueType { type_strindex: s(t.r#type), unit_strindex: s(t.unit) });
    let profile = Profile {
        sample_type: value_type(p.sample_type.get(main)),
        samples,
        time_unix_nano: u64::try_from(p.time_nanos).unwrap_or(0),
        duration_nano: u64::try_from(p.duration_nanos).unwrap_or(0),
        period_type: value_type(p.period_type.as_ref()),
        period: p.period,
        profile_id: link.profile_id.to_vec(),
        ..Default::default()
    };
    (d, profile)
}

/// The request as OTLP/JSON: the crate's serde, with the link's ids as hex
/// (the JSON encoding's rule for trace and span ids, which the crate applies
/// to spans but not to profile links).
pub fn to_json(request: &ExportProfilesServiceRequest) -> Result<Vec<u8>, serde_json::Error> {
    let mut value = serde_json::to_value(request)?;
    if let Some(links) = value.pointer_mut("/dictionary/linkTable").and_then(|l| l.as_array_mut()) {
        for link in links {
            for key in ["traceId", "spanId"] {
                if let Some(bytes) = link.get(key).and_then(|b| b.as_array()) {
                    let hex: String = bytes.iter().filter_map(|b| b.as_u64()).map(|b| format!("{b:02x}")).collect();
                    link[key] = serde_json::Value::String(hex);
                }
            }
        }
    }
    serde_json::to_vec(&value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::pprof::{self as pp};

    fn link() -> EpisodeLink {
        EpisodeLink {
            trace_id: [7; 16],
            span_id: [9; 8],
            profile_id: [3; 16],
            workload: Arc::new(Identity { service_name: "checkout".into(), ..Default::default() }),
        }
    }

    /// Two samples on one stack (main.main → main.spin, the latter with an
    /// inlined frame), one kernel-only sample; pids 10 and 11.
    fn pprof() -> pp::Profile {
        let strings = [
            "",
            "samples",
            "count",
            "cpu",
            "nanoseconds",
            "pid",
            "main.main",
            "main.spin",
            "main.inl",
            "/bin/x",
            "do_syscall",
        ];
        let st = |t: &str| strings.iter().position(|s| *s == t).unwrap() as i64;
        let f =
            |id: u64, name: &str| pp::Function { id, name: st(name), system_name: st(name), filename: st("/bin/x") };
        let line = |function_id: u64| pp::Line { function_id, line: 4 };
        let pid = |n: i64| pp::Label { key: st("pid"), num: n, ..Default::default() };
        pp::Profile {
            sample_type: vec![
                pp::ValueType { r#type: st("samples"), unit: st("count") },
                pp::ValueType { r#type: st("cpu"), unit: st("nanoseconds") },
            ],
            sample: vec![
                pp::Sample { location_id: vec![2, 1], value: vec![2, 20], label: vec![pid(10)] },
                pp::Sample { location_id: vec![2, 1], value: vec![1, 10], label: vec![pid(11)] },
                pp::Sample { location_id: vec![3], value: vec![4, 40], label: vec![pid(10)] },
            ],
            mapping: vec![pp::Mapping {
                id: 1,
                memory_start: 0x1000,
                memory_limit: 0x2000,
                filename: st("/bin/x"),
                ..Default::default()
            }],
            location: vec![
                pp::Location { id: 1, mapping_id: 1, address: 0x1010, line: vec![line(1)] },
                pp::Location { id: 2, mapping_id: 1, address: 0x1020, line: vec![line(3), line(2)] },
                pp::Location { id: 3, mapping_id: 7, address: 0xffff_0000, line: vec![line(4)] },
            ],
            function: vec![f(1, "main.main"), f(2, "main.spin"), f(3, "main.inl"), f(4, "do_syscall")],
            string_table: strings.iter().map(|s| s.to_string()).collect(),
            time_nanos: 1_000,
            duration_nanos: 5_000,
            period_type: Some(pp::ValueType { r#type: st("cpu"), unit: st("nanoseconds") }),
            period: 52_631_578,
            ..Default::default()
        }
    }

    fn name_of(d: &ProfilesDictionary, location: i32) -> Vec<&str> {
        d.location_table[location as usize]
            .lines
            .iter()
            .map(|l| d.string_table[d.function_table[l.function_index as usize].name_strindex as usize].as_str())
            .collect()
    }

    #[test]
    fn every_table_starts_with_its_zero_entry() {
        let (d, _) = convert(&pprof(), &link());
        assert_eq!(d.string_table[0], "");
        assert_eq!(d.mapping_table[0], Mapping::default());
        assert_eq!(d.location_table[0], Location::default());
        assert_eq!(d.function_table[0], Function::default());
        assert_eq!(d.link_table[0], Link::default());
        assert_eq!(d.stack_table[0], Stack::default());
        assert_eq!(d.attribute_table[0], KeyValueAndUnit::default());
    }

    #[test]
    fn samples_keep_their_stacks_counts_pids_and_link() {
        let (d, p) = convert(&pprof(), &link());
        assert_eq!(p.samples.len(), 3);
        assert_eq!(p.samples.iter().flat_map(|s| &s.values).sum::<i64>(), 7, "the sample count, not CPU time");
        // One stack shared by the first two samples, leaf first.
        assert_eq!(p.samples[0].stack_index, p.samples[1].stack_index);
        assert_eq!(d.stack_table.len(), 3);
        let stack = &d.stack_table[p.samples[0].stack_index as usize].location_indices;
        assert_eq!(name_of(&d, stack[0]), ["main.inl", "main.spin"], "inlined frames innermost first");
        assert_eq!(name_of(&d, stack[1]), ["main.main"]);
        assert_eq!(d.location_table[stack[0] as usize].address, 0x1020);
        let mapping = &d.mapping_table[d.location_table[stack[0] as usize].mapping_index as usize];
        assert_eq!(
            (mapping.memory_start, d.string_table[mapping.filename_strindex as usize].as_str()),
            (0x1000, "/bin/x")
        );
        // A location whose mapping is unknown gets the zero mapping.
        let kernel = d.stack_table[p.samples[2].stack_index as usize].location_indices[0];
        assert_eq!(d.location_table[kernel as usize].mapping_index, 0);
        // Every sample links to the episode's root span.
        assert!(p.samples.iter().all(|s| s.link_index == 1));
        assert_eq!(d.link_table[1], Link { trace_id: vec![7; 16], span_id: vec![9; 8] });
        // pids as `process.pid`, one attribute entry per pid.
        let pid = |s: &Sample| {
            let a = &d.attribute_table[s.attribute_indices[0] as usize];
            (d.string_table[a.key_strindex as usize].as_str(), a.value.clone().and_then(|v| v.value))
        };
        assert_eq!(pid(&p.samples[0]), ("process.pid", Some(any_value::Value::IntValue(10))));
        assert_eq!(pid(&p.samples[1]), ("process.pid", Some(any_value::Value::IntValue(11))));
        assert_eq!(p.samples[0].attribute_indices, p.samples[2].attribute_indices);
        assert_eq!(d.attribute_table.len(), 3);
    }

    #[test]
    fn the_profile_carries_its_id_type_and_times() {
        let (d, p) = convert(&pprof(), &link());
        let vt = |v: &Option<ValueType>| {
            let v = v.unwrap();
            (d.string_table[v.type_strindex as usize].as_str(), d.string_table[v.unit_strindex as usize].as_str())
        };
        assert_eq!(vt(&p.sample_type), ("samples", "count"));
        assert_eq!(vt(&p.period_type), ("cpu", "nanoseconds"));
        assert_eq!((p.period, p.time_unix_nano, p.duration_nano), (52_631_578, 1_000, 5_000));
        assert_eq!(p.profile_id, vec![3; 16]);
    }

    #[test]
    fn the_request_has_the_resource_and_round_trips() {
        let resource = vec![KeyValue {
            key: "service.name".into(),
            value: Some(AnyValue { value: Some(any_value::Value::StringValue("checkout".into())) }),
            ..Default::default()
        }];
        let r = request(&pprof(), &link(), resource.clone());
        assert_eq!(r.resource_profiles[0].resource.as_ref().unwrap().attributes, resource);
        assert_eq!(r.resource_profiles[0].scope_profiles[0].scope.as_ref().unwrap().name, "observer");
        let bytes = prost::Message::encode_to_vec(&r);
        let back: ExportProfilesServiceRequest = prost::Message::decode(bytes.as_slice()).unwrap();
        assert_eq!(back, r);
        let json: serde_json::Value = serde_json::from_slice(&to_json(&r).unwrap()).unwrap();
        assert_eq!(json["dictionary"]["linkTable"][1]["traceId"], "07".repeat(16));
        assert_eq!(json["dictionary"]["linkTable"][1]["spanId"], "09".repeat(8));
        assert_eq!(json["resourceProfiles"][0]["scopeProfiles"][0]["profiles"][0]["profileId"], "03".repeat(16));
    }

    #[test]
    fn a_foreign_string_table_without_its_empty_string_is_shifted() {
        let mut p = pprof();
        p.string_table.remove(0);
        for f in &mut p.function {
            f.name -= 1;
        }
        let (d, _) = convert(&p, &link());
        assert_eq!(d.string_table[0], "");
        assert_eq!(d.string_table[d.function_table[1].name_strindex as usize], "main.main");
    }
}
