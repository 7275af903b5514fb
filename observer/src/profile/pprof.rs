//! The pprof format (`profile.proto` of github.com/google/pprof), as prost
//! messages, and the CPU and allocation profiles built from a selection of
//! samples: what `go tool pprof` and every pprof viewer open.

use std::collections::HashMap;

use super::{
    counts::{RawSample, SampleKind},
    slices::Selection,
    symbolize::Symbolizer,
};
use observer_common::profile::alloc_method;

#[derive(Clone, PartialEq, prost::Message)]
pub struct Profile {
    #[prost(message, repeated, tag = "1")]
    pub sample_type: Vec<ValueType>,
    #[prost(message, repeated, tag = "2")]
    pub sample: Vec<Sample>,
    #[prost(message, repeated, tag = "3")]
    pub mapping: Vec<Mapping>,
    #[prost(message, repeated, tag = "4")]
    pub location: Vec<Location>,
    #[prost(message, repeated, tag = "5")]
    pub function: Vec<Function>,
    #[prost(string, repeated, tag = "6")]
    pub string_table: Vec<String>,
    #[prost(int64, tag = "9")]
    pub time_nanos: i64,
    #[prost(int64, tag = "10")]
    pub duration_nanos: i64,
    #[prost(message, optional, tag = "11")]
    pub period_type: Option<ValueType>,
    #[prost(int64, tag = "12")]
    pub period: i64,
    #[prost(int64, repeated, tag = "13")]
    pub comment: Vec<i64>,
    #[prost(int64, tag = "14")]
    pub default_sample_type: i64,
}

#[derive(Clone, Copy, PartialEq, prost::Message)]
pub struct ValueType {
    #[prost(int64, tag = "1")]
    pub r#type: i64,
    #[prost(int64, tag = "2")]
    pub unit: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Sample {
    /// Leaf first.
    #[prost(uint64, repeated, tag = "1")]
    pub location_id: Vec<u64>,
    #[prost(int64, repeated, tag = "2")]
    pub value: Vec<i64>,
    #[prost(message, repeated, tag = "3")]
    pub label: Vec<Label>,
}

#[derive(Clone, Copy, PartialEq, prost::Message)]
pub struct Label {
    #[prost(int64, tag = "1")]
    pub key: i64,
    #[prost(int64, tag = "2")]
    pub str: i64,
    #[prost(int64, tag = "3")]
    pub num: i64,
    #[prost(int64, tag = "4")]
    pub num_unit: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Mapping {
    #[prost(uint64, tag = "1")]
    pub id: u64,
    #[prost(uint64, tag = "2")]
    pub memory_start: u64,
    #[prost(uint64, tag = "3")]
    pub memory_limit: u64,
    #[prost(uint64, tag = "4")]
    pub file_offset: u64,
    #[prost(int64, tag = "5")]
    pub filename: i64,
    #[prost(int64, tag = "6")]
    pub build_id: i64,
    #[prost(bool, tag = "7")]
    pub has_functions: bool,
    #[prost(bool, tag = "8")]
    pub has_filenames: bool,
    #[prost(bool, tag = "9")]
    pub has_line_numbers: bool,
    #[prost(bool, tag = "10")]
    pub has_inline_frames: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Location {
    #[prost(uint64, tag = "1")]
    pub id: u64,
    #[prost(uint64, tag = "2")]
    pub mapping_id: u64,
    #[prost(uint64, tag = "3")]
    pub address: u64,
    /// Innermost first: the last is the function the others were inlined into.
    #[prost(message, repeated, tag = "4")]
    pub line: Vec<Line>,
}

#[derive(Clone, Copy, PartialEq, prost::Message)]
pub struct Line {
    #[prost(uint64, tag = "1")]
    pub function_id: u64,
    #[prost(int64, tag = "2")]
    pub line: i64,
}

#[derive(Clone, Copy, PartialEq, prost::Message)]
pub struct Function {
    #[prost(uint64, tag = "1")]
    pub id: u64,
    #[prost(int64, tag = "2")]
    pub name: i64,
    #[prost(int64, tag = "3")]
    pub system_name: i64,
    #[prost(int64, tag = "4")]
    pub filename: i64,
}

/// What a profile measures, and what it says about how it was taken.
#[derive(Debug, Clone)]
pub enum Meta {
    Cpu(CpuMeta),
    Alloc,
}

/// The profile of `sel` that `meta` describes.
pub fn build(sel: &Selection, symbols: &mut Symbolizer, meta: &Meta) -> Profile {
    match meta {
        Meta::Cpu(cpu) => cpu_profile(sel, symbols, cpu),
        Meta::Alloc => alloc_profile(sel, symbols),
    }
}

#[derive(Debug, Clone)]
pub struct CpuMeta {
    pub period_ns: u64,
    /// `perf_event cpu-clock at 19 Hz per CPU`, …
    pub comments: Vec<String>,
}

/// Builds one profile: strings, functions, mappings and locations interned.
#[derive(Default)]
struct Builder {
    profile: Profile,
    strings: HashMap<String, i64>,
    functions: HashMap<(String, String), u64>,
    /// By (pid, mapping start) for user code; the kernel's is `KERNEL`.
    mappings: HashMap<(u32, u64), u64>,
    locations: HashMap<(u64, u64), u64>,
}

/// The kernel's mapping key (no process has a mapping at 0).
const KERNEL: (u32, u64) = (0, 0);

impl Builder {
    fn string(&mut self, s: &str) -> i64 {
        if let Some(&i) = self.strings.get(s) {
            return i;
        }
        let i = self.profile.string_table.len() as i64;
        self.profile.string_table.push(s.to_string());
        self.strings.insert(s.to_string(), i);
        i
    }

    fn function(&mut self, name: &str, file: &str) -> u64 {
        if let Some(&id) = self.functions.get(&(name.to_string(), file.to_string())) {
            return id;
        }
        let id = self.profile.function.len() as u64 + 1;
        let (name_i, file_i) = (self.string(name), self.string(file));
        self.profile.function.push(Function { id, name: name_i, system_name: name_i, filename: file_i });
        self.functions.insert((name.to_string(), file.to_string()), id);
        id
    }

    fn location(&mut self, mapping_id: u64, address: u64, lines: impl FnOnce(&mut Self) -> Vec<Line>) -> u64 {
        if let Some(&id) = self.locations.get(&(mapping_id, address)) {
            return id;
        }
        let id = self.profile.location.len() as u64 + 1;
        let line = lines(self);
        self.profile.location.push(Location { id, mapping_id, address, line });
        self.locations.insert((mapping_id, address), id);
        id
    }

    fn value_type(&mut self, kind: &str, unit: &str) -> ValueType {
        ValueType { r#type: self.string(kind), unit: self.string(unit) }
    }
}

/// The CPU profile of `sel`: `samples/count` and `cpu/nanoseconds` per stack,
/// a `pid` label on each sample.
pub fn cpu_profile(sel: &Selection, symbols: &mut Symbolizer, meta: &CpuMeta) -> Profile {
    let mut b = Builder::default();
    b.string("");
    let samples = b.value_type("samples", "count");
    let cpu = b.value_type("cpu", "nanoseconds");
    b.profile.sample_type = vec![samples, cpu];
    b.profile.period_type = Some(cpu);
    b.profile.period = meta.period_ns as i64;
    b.profile.time_nanos = sel.start_unix_nano as i64;
    b.profile.duration_nanos = sel.end_unix_nano.saturating_sub(sel.start_unix_nano) as i64;
    b.profile.comment = meta.comments.iter().map(|c| b.string(c)).collect::<Vec<_>>();
    let pid_key = b.string("pid");
    for s in &sel.samples {
        let location_id = stack_locations(&mut b, s, sel, symbols);
        b.profile.sample.push(Sample {
            location_id,
            value: vec![s.count as i64, (s.count * meta.period_ns) as i64],
            label: vec![Label { key: pid_key, num: i64::from(s.tgid), ..Default::default() }],
        });
    }
    b.profile
}

impl Profile {
    /// Which of each sample's values is the profile's own measure: the
    /// default sample type's (`alloc_space`), else the first (`samples`).
    pub fn main_value(&self) -> usize {
        self.sample_type.iter().position(|t| t.r#type == self.default_sample_type && t.r#type != 0).unwrap_or(0)
    }
}

/// The runtime's sampling rate when a process's could not be read: its default.
const DEFAULT_MEM_PROFILE_RATE: u64 = 512 * 1024;

/// The allocation profile of `sel`: `alloc_objects/count` and
/// `alloc_space/bytes` per allocating stack (the runtime's frames above the
/// first frame of the program hidden, as `runtime/pprof` does), with `pid`
/// and `alloc_method` labels. The runtime's own samples are scaled by the
/// process's `MemProfileRate` as pprof scales them; span refills count each
/// new span's objects and bytes, large allocations their size.
pub fn alloc_profile(sel: &Selection, symbols: &mut Symbolizer) -> Profile {
    let mut b = Builder::default();
    b.string("");
    let objects = b.value_type("alloc_objects", "count");
    let space = b.value_type("alloc_space", "bytes");
    b.profile.sample_type = vec![objects, space];
    b.profile.default_sample_type = space.r#type;
    b.profile.period_type = Some(b.value_type("space", "bytes"));
    b.profile.time_nanos = sel.start_unix_nano as i64;
    b.profile.duration_nanos = sel.end_unix_nano.saturating_sub(sel.start_unix_nano) as i64;
    let mut rates: Vec<u64> =
        sel.samples.iter().filter(|s| s.kind == SampleKind::Alloc(alloc_method::SAMPLED)).map(|s| s.rate).collect();
    rates.sort_unstable();
    rates.dedup();
    b.profile.period = rates.iter().copied().find(|&r| r != 0).unwrap_or(0) as i64;
    let mut methods: Vec<SampleKind> = sel.samples.iter().map(|s| s.kind).collect();
    methods.sort_unstable();
    methods.dedup();
    let comments: Vec<String> = methods.iter().map(|&m| method_comment(m, &rates)).collect();
    b.profile.comment = comments.iter().map(|c| b.string(c)).collect();
    let (pid_key, method_key) = (b.string("pid"), b.string("alloc_method"));
    for s in &sel.samples {
        let (count, bytes) = match s.kind {
            SampleKind::Alloc(alloc_method::SAMPLED) => {
                let rate = if s.rate == 0 { DEFAULT_MEM_PROFILE_RATE } else { s.rate };
                scaled(s.count, s.bytes, rate)
            }
            _ => (s.objects, s.bytes),
        };
        let user = user_locations(&mut b, s, sel, symbols);
        let location_id = hide_runtime(&b, user);
        let method = b.string(s.kind.name());
        b.profile.sample.push(Sample {
            location_id,
            value: vec![count as i64, bytes as i64],
            label: vec![
                Label { key: pid_key, num: i64::from(s.tgid), ..Default::default() },
                Label { key: method_key, str: method, ..Default::default() },
            ],
        });
    }
    b.profile
}

fn method_comment(method: SampleKind, rates: &[u64]) -> String {
    let rates: Vec<String> = rates
        .iter()
        .map(|&r| if r == 0 { format!("unknown (assumed {DEFAULT_MEM_PROFILE_RATE})") } else { r.to_string() })
        .collect();
    match method {
        SampleKind::Alloc(alloc_method::SAMPLED) => format!(
            "observer: alloc_method=memprofile: the runtime's own samples (runtime.mProf_Malloc), \
             MemProfileRate {}, scaled as runtime/pprof scales them",
            rates.join(", ")
        ),
        SampleKind::Alloc(alloc_method::SPAN_REFILL) => "observer: alloc_method=span_refill: memory profiling is \
             linked out of this binary; each new span for a size class (runtime.(*mcache).refill) counts all its \
             objects and bytes, an upper bound for what the stack allocated"
            .to_string(),
        SampleKind::Alloc(alloc_method::LARGE) => {
            "observer: alloc_method=large: each allocation over 32 KiB (runtime.(*mcache).allocLarge), exact"
                .to_string()
        }
        other => format!("observer: alloc_method={}", other.name()),
    }
}

/// What `count` samples of `bytes` in all stand for at `rate`: the
/// runtime samples an allocation of size `s` with probability
/// `1 - exp(-s/rate)` (`runtime/pprof`'s `scaleHeapSample`).
pub fn scaled(count: u64, bytes: u64, rate: u64) -> (u64, u64) {
    if count == 0 || bytes == 0 {
        return (0, 0);
    }
    if rate <= 1 {
        return (count, bytes);
    }
    let average = bytes as f64 / count as f64;
    let scale = 1.0 / (1.0 - (-average / rate as f64).exp());
    ((count as f64 * scale) as u64, (bytes as f64 * scale) as u64)
}

/// `ids` without the runtime's frames above the first of the program (all
/// of them if there is none).
fn hide_runtime(b: &Builder, ids: Vec<u64>) -> Vec<u64> {
    let runtime = |id: u64| {
        let Some(loc) = b.profile.location.get(id as usize - 1) else { return false };
        !loc.line.is_empty()
            && loc.line.iter().all(|l| {
                let f = &b.profile.function[l.function_id as usize - 1];
                let name = &b.profile.string_table[f.name as usize];
                name.starts_with("runtime.") || name.starts_with("internal/runtime/")
            })
    };
    match ids.iter().position(|&id| !runtime(id)) {
        Some(first) => ids[first..].to_vec(),
        None => ids,
    }
}

/// One sample's locations, leaf first: its kernel frames, then its user
/// frames (interned first: pprof takes the first mapping for the program).
fn stack_locations(b: &mut Builder, s: &RawSample, sel: &Selection, symbols: &mut Symbolizer) -> Vec<u64> {
    let user = user_locations(b, s, sel, symbols);
    let mut ids = Vec::with_capacity(s.kernel.len() + user.len());
    for &addr in &s.kernel {
        let mapping = kernel_mapping(b);
        let name = symbols.kernel(addr).map(str::to_string);
        ids.push(b.location(mapping, addr, |b| match name {
            Some(n) => vec![Line { function_id: b.function(&n, "[kernel]"), line: 0 }],
            None => Vec::new(),
        }));
    }
    ids.extend(user);
    ids
}

fn user_locations(b: &mut Builder, s: &RawSample, sel: &Selection, symbols: &mut Symbolizer) -> Vec<u64> {
    let mut ids = Vec::with_capacity(s.user.len() + 1);
    let maps = sel.maps.get(&s.tgid);
    for (i, &addr) in s.user.iter().enumerate() {
        let Some(mapping) = maps.and_then(|m| m.find(addr)) else {
            // Outside every mapping read at drain time: kept as an address.
            let unknown = unknown_mapping(b);
            ids.push(b.location(unknown, addr, |_| Vec::new()));
            continue;
        };
        let user = symbols.user(s.tgid, mapping, addr, i > 0);
        let mapping_id = user_mapping(b, s.tgid, mapping, &user.build_id, !user.frames.is_empty());
        let address = if i > 0 { addr - 1 } else { addr };
        ids.push(b.location(mapping_id, address, |b| {
            user.frames
                .iter()
                .map(|f| Line { function_id: b.function(&f.function, &f.file), line: i64::from(f.line) })
                .collect()
        }));
    }
    if s.user_lost {
        let unknown = unknown_mapping(b);
        let function_id = b.function("[user stack not recorded]", "");
        ids.push(b.location(unknown, 0, |_| vec![Line { function_id, line: 0 }]));
    }
    ids
}

fn kernel_mapping(b: &mut Builder) -> u64 {
    if let Some(&id) = b.mappings.get(&KERNEL) {
        return id;
    }
    let id = b.profile.mapping.len() as u64 + 1;
    let filename = b.string("[kernel.kallsyms]");
    b.profile.mapping.push(Mapping {
        id,
        memory_start: 0,
        memory_limit: u64::MAX,
        filename,
        has_functions: true,
        ..Default::default()
    });
    b.mappings.insert(KERNEL, id);
    id
}

/// For addresses no mapping held (or stacks not recorded).
fn unknown_mapping(b: &mut Builder) -> u64 {
    const UNKNOWN: (u32, u64) = (0, 1);
    if let Some(&id) = b.mappings.get(&UNKNOWN) {
        return id;
    }
    let id = b.profile.mapping.len() as u64 + 1;
    let filename = b.string("[unknown]");
    b.profile.mapping.push(Mapping { id, filename, ..Default::default() });
    b.mappings.insert(UNKNOWN, id);
    id
}

fn user_mapping(b: &mut Builder, pid: u32, m: &super::maps::Mapping, build_id: &str, symbolized: bool) -> u64 {
    if let Some(&id) = b.mappings.get(&(pid, m.start)) {
        return id;
    }
    let id = b.profile.mapping.len() as u64 + 1;
    let (filename, build_id) = (b.string(&m.path), b.string(build_id));
    b.profile.mapping.push(Mapping {
        id,
        memory_start: m.start,
        memory_limit: m.end,
        file_offset: m.offset,
        filename,
        build_id,
        has_functions: symbolized,
        has_filenames: symbolized,
        has_line_numbers: symbolized,
        has_inline_frames: symbolized,
    });
    b.mappings.insert((pid, m.start), id);
    id
}

/// The profile as pprof files hold it: gzipped protobuf.
pub fn gzipped(profile: &Profile) -> Vec<u8> {
    use std::io::Write;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    // Writing to memory cannot fail.
    let _ = gz.write_all(&prost::Message::encode_to_vec(profile));
    gz.finish().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_scale_as_runtime_pprof_scales_them() {
        // 10 samples of 64 KiB at the default rate: each stands for
        // 1/(1-e^(-1/8)) = 8.51 allocations.
        assert_eq!(scaled(10, 10 * 65536, 512 * 1024), (85, 5_577_384));
        // Rate 1: every allocation was sampled.
        assert_eq!(scaled(3, 300, 1), (3, 300));
        assert_eq!(scaled(0, 0, 512 * 1024), (0, 0));
        // Large allocations are sampled (almost) always.
        assert_eq!(scaled(2, 2 << 30, 512 * 1024).0, 2);
    }
}
