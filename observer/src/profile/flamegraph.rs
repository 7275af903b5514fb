//! An episode's profile as a flame graph (SVG, by inferno), next to its
//! pprof file: what a person on the node opens in a browser, no tool needed.
//! Built from the symbolized pprof profile, so it names what `go tool pprof`
//! names: stacks root → leaf, inlined frames as frames of their own.

use std::collections::BTreeMap;

use super::pprof::Profile;
use crate::export::disk::Disk;

/// `profiles/<trace>.cpu.pb.gz` → `profiles/<trace>.cpu.svg`.
pub fn svg_name(pprof_name: &str) -> String {
    format!("{}.svg", pprof_name.strip_suffix(".pb.gz").unwrap_or(pprof_name))
}

/// The profile's stacks in the folded format (`root;…;leaf count`), one
/// line per distinct stack, sorted; counts are the profile's main value
/// (samples, or bytes for allocations).
pub fn folded(profile: &Profile) -> Vec<String> {
    let text = |i: i64| usize::try_from(i).ok().and_then(|i| profile.string_table.get(i)).map_or("", String::as_str);
    let functions: BTreeMap<u64, &str> = profile.function.iter().map(|f| (f.id, text(f.name))).collect();
    let locations: BTreeMap<u64, &super::pprof::Location> = profile.location.iter().map(|l| (l.id, l)).collect();
    let mut stacks: BTreeMap<String, u64> = BTreeMap::new();
    let main = profile.main_value();
    for sample in &profile.sample {
        let count = sample.value.get(main).copied().unwrap_or(0);
        let Ok(count) = u64::try_from(count) else { continue };
        if count == 0 {
            continue;
        }
        let mut frames: Vec<String> = Vec::new();
        // pprof: leaf first, and each location's lines innermost first.
        for id in sample.location_id.iter().rev() {
            let Some(location) = locations.get(id) else { continue };
            if location.line.is_empty() {
                frames.push(format!("{:#x}", location.address));
            }
            for line in location.line.iter().rev() {
                let name = functions.get(&line.function_id).copied().filter(|n| !n.is_empty()).unwrap_or("[unknown]");
                // `;` separates frames and the last space the count.
                frames.push(name.replace(';', ":"));
            }
        }
        if frames.is_empty() {
            frames.push("[no stack]".into());
        }
        *stacks.entry(frames.join(";")).or_default() += count;
    }
    stacks.into_iter().map(|(stack, n)| format!("{stack} {n}")).collect()
}

/// Its main value is bytes (an allocation profile), not samples.
fn measures_bytes(profile: &Profile) -> bool {
    let main = profile.sample_type.get(profile.main_value());
    main.and_then(|t| profile.string_table.get(usize::try_from(t.unit).ok()?)).is_some_and(|u| u == "bytes")
}

/// The flame graph of `profile`, titled `title`; `None` when it has no
/// sample to draw.
pub fn svg(profile: &Profile, title: &str) -> Result<Option<Vec<u8>>, std::io::Error> {
    let lines = folded(profile);
    if lines.is_empty() {
        return Ok(None);
    }
    let mut options = inferno::flamegraph::Options::default();
    options.title = title.to_string();
    options.count_name = if measures_bytes(profile) { "bytes" } else { "samples" }.into();
    // The same file for the same profile (no random colours).
    options.deterministic = true;
    let mut out = Vec::new();
    inferno::flamegraph::from_lines(&mut options, lines.iter().map(String::as_str), &mut out)?;
    Ok(Some(out))
}

/// Writes the flame graph of the episode profile written at `pprof_name`
/// next to it; a failure is logged only (the pprof file has it all).
pub fn write(disk: &Disk, pprof_name: &str, profile: &Profile, service: &str) {
    let what = if measures_bytes(profile) { "Allocations" } else { "CPU" };
    match svg(profile, &format!("{what} {service}")) {
        Ok(Some(svg)) => {
            if let Err(e) = disk.write_whole(&svg_name(pprof_name), &svg) {
                tracing::debug!("flame graph of {pprof_name} not written: {e}");
            }
        }
        Ok(None) => {}
        Err(e) => tracing::debug!("flame graph of {pprof_name}: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::pprof::{Function, Line, Location, Sample};

    /// main.main → main.work (main.inlined inlined into it) → main.spin, twice;
    /// main.main alone once; a location without symbols once.
    fn profile() -> Profile {
        let strings = ["", "main.main", "main.work", "main.inlined", "main.spin", "a;b"];
        let function = (1..strings.len() as u64)
            .map(|id| Function { id, name: id as i64, system_name: id as i64, filename: 0 })
            .collect();
        let line = |f: u64| Line { function_id: f, line: 1 };
        let location = vec![
            Location { id: 1, mapping_id: 1, address: 0x10, line: vec![line(1)] },
            Location { id: 2, mapping_id: 1, address: 0x20, line: vec![line(3), line(2)] },
            Location { id: 3, mapping_id: 1, address: 0x30, line: vec![line(4)] },
            Location { id: 4, mapping_id: 1, address: 0x40, line: vec![] },
            Location { id: 5, mapping_id: 1, address: 0x50, line: vec![line(5)] },
        ];
        let sample = |ids: &[u64], n: i64| Sample { location_id: ids.to_vec(), value: vec![n, n * 10], label: vec![] };
        Profile {
            string_table: strings.iter().map(|s| s.to_string()).collect(),
            function,
            location,
            sample: vec![sample(&[3, 2, 1], 2), sample(&[1], 1), sample(&[4, 1], 1), sample(&[5], 1), sample(&[1], 0)],
            ..Default::default()
        }
    }

    #[test]
    fn folded_is_root_to_leaf_with_inlined_frames_expanded() {
        assert_eq!(
            folded(&profile()),
            vec!["a:b 1", "main.main 1", "main.main;0x40 1", "main.main;main.work;main.inlined;main.spin 2"]
        );
    }

    #[test]
    fn svg_names_the_functions() {
        let svg = String::from_utf8(svg(&profile(), "cpu").unwrap().unwrap()).unwrap();
        assert!(svg.starts_with("<?xml"), "{}", &svg[..40.min(svg.len())]);
        assert!(svg.contains("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("main.spin"));
        assert_eq!(svg, String::from_utf8(super::svg(&profile(), "cpu").unwrap().unwrap()).unwrap());
    }

    #[test]
    fn nothing_to_draw_is_none() {
        assert!(svg(&Profile::default(), "cpu").unwrap().is_none());
        assert_eq!(svg_name("profiles/ab.cpu.pb.gz"), "profiles/ab.cpu.svg");
    }
}
