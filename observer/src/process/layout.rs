//! Per-Go-version layouts of runtime structs: the one place that knows them.
//!
//! Used when a binary carries no DWARF to derive them from (`-ldflags=-w`,
//! stripped); with DWARF the binary's own layout wins (`dwarf.rs`). Every
//! entry was read from the DWARF of a fixture built with that release and is
//! checked by the end-to-end tests (`go_gc`, variant `NoDwarf`) against
//! `GODEBUG=gctrace=1`; add a release only together with such a run.

use observer_common::goruntime::field;

/// A Go release, major and minor (`go1.26.8` → 1.26).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct GoRelease {
    pub major: u32,
    pub minor: u32,
}

impl GoRelease {
    /// Reads `go1.26.8`, `go1.26`, `go1.26rc1`, `go1.26.8 X:nocoverageredesign`;
    /// `devel` builds have no release.
    pub fn parse(version: &str) -> Option<Self> {
        let rest = version.strip_prefix("go")?;
        let rest = rest.split([' ', '-', '+']).next()?;
        let mut parts = rest.splitn(3, '.');
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?;
        let digits = minor.find(|c: char| !c.is_ascii_digit()).unwrap_or(minor.len());
        let minor = minor[..digits].parse().ok()?;
        Some(Self { major, minor })
    }
}

impl std::fmt::Display for GoRelease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "go{}.{}", self.major, self.minor)
    }
}

/// The runtime global a figure lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Global {
    /// `runtime.work` (`runtime.workType`).
    Work,
    /// `runtime.gcController` (`runtime.gcControllerState`).
    GcController,
}

impl Global {
    pub fn symbol(self) -> &'static str {
        match self {
            Self::Work => "runtime.work",
            Self::GcController => "runtime.gcController",
        }
    }

    pub fn type_name(self) -> &'static str {
        match self {
            Self::Work => "runtime.workType",
            Self::GcController => "runtime.gcControllerState",
        }
    }
}

/// Where one [`field`] is: its global and its member there. A member of an
/// atomic type (`atomic.Int32`, …) is read at its inner `value`.
#[derive(Debug, Clone, Copy)]
pub struct FieldSpec {
    pub global: Global,
    pub member: &'static str,
}

/// By [`field`] index.
pub const FIELDS: [FieldSpec; field::COUNT] = {
    use Global::{GcController, Work};
    [
        FieldSpec { global: Work, member: "cycles" },
        FieldSpec { global: Work, member: "tSweepTerm" },
        FieldSpec { global: Work, member: "tMark" },
        FieldSpec { global: Work, member: "tMarkTerm" },
        FieldSpec { global: Work, member: "tEnd" },
        FieldSpec { global: Work, member: "heap0" },
        FieldSpec { global: Work, member: "heap1" },
        FieldSpec { global: Work, member: "heap2" },
        FieldSpec { global: GcController, member: "lastHeapGoal" },
        FieldSpec { global: GcController, member: "gcPercent" },
        FieldSpec { global: GcController, member: "memoryLimit" },
    ]
};

/// `runtime.work.heap0`, for messages.
pub fn field_name(index: usize) -> String {
    FIELDS.get(index).map_or_else(|| format!("field {index}"), |f| format!("{}.{}", f.global.symbol(), f.member))
}

/// Byte offsets of the figures a GC event reads, by [`field`] index, from
/// the start of their [`Global`] (an atomic's inner value included).
/// `None`: not known for this binary; the event goes without that figure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuntimeLayout {
    pub offsets: [Option<u64>; field::COUNT],
}

impl RuntimeLayout {
    /// Names of the figures without an offset.
    #[cfg(test)]
    pub fn missing(&self) -> Vec<String> {
        (0..field::COUNT).filter(|&i| self.offsets[i].is_none()).map(field_name).collect()
    }
}

/// A release's offsets, in [`field`] order: cycles, tSweepTerm, tMark,
/// tMarkTerm, tEnd, heap0, heap1, heap2 (`runtime.workType`); lastHeapGoal,
/// gcPercent, memoryLimit (`runtime.gcControllerState`).
const fn known(o: [u64; field::COUNT]) -> RuntimeLayout {
    let mut offsets = [None; field::COUNT];
    let mut i = 0;
    while i < field::COUNT {
        offsets[i] = Some(o[i]);
        i += 1;
    }
    RuntimeLayout { offsets }
}

/// (release, layout), read from the DWARF of a fixture built with that
/// release (`table_matches_fixture_dwarf` re-reads them when the fixtures
/// are built).
const TABLE: &[(GoRelease, RuntimeLayout)] = &[
    (GoRelease { major: 1, minor: 22 }, known([400, 416, 424, 432, 440, 456, 464, 472, 96, 0, 8])),
    (GoRelease { major: 1, minor: 23 }, known([424, 440, 448, 456, 464, 480, 488, 496, 96, 0, 8])),
    (GoRelease { major: 1, minor: 24 }, known([424, 440, 448, 456, 464, 480, 488, 496, 96, 0, 8])),
    (GoRelease { major: 1, minor: 25 }, known([512, 528, 536, 544, 552, 568, 576, 584, 96, 0, 8])),
    (GoRelease { major: 1, minor: 26 }, known([648, 664, 672, 680, 688, 704, 712, 720, 96, 0, 8])),
    (GoRelease { major: 1, minor: 27 }, known([648, 664, 672, 680, 688, 704, 712, 720, 96, 0, 8])),
];

pub fn for_release(release: GoRelease) -> Option<RuntimeLayout> {
    TABLE.iter().find(|(r, _)| *r == release).map(|(_, layout)| *layout)
}

/// The releases the table knows, for messages.
pub fn known_releases() -> String {
    TABLE.iter().map(|(r, _)| r.to_string()).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_from_version_strings() {
        let r = |major, minor| Some(GoRelease { major, minor });
        assert_eq!(GoRelease::parse("go1.26.8"), r(1, 26));
        assert_eq!(GoRelease::parse("go1.26"), r(1, 26));
        assert_eq!(GoRelease::parse("go1.27rc1"), r(1, 27));
        assert_eq!(GoRelease::parse("go1.19.8 X:nocoverageredesign"), r(1, 19));
        assert_eq!(GoRelease::parse("devel go1.27-abcdef"), None);
        assert_eq!(GoRelease::parse(""), None);
        assert_eq!(GoRelease::parse("go1"), None);
    }

    #[test]
    fn table_knows_the_verified_releases_only() {
        let go122 = for_release(GoRelease { major: 1, minor: 22 }).unwrap();
        assert_eq!(go122.offsets[field::CYCLES], Some(400));
        assert!(go122.missing().is_empty());
        let go126 = for_release(GoRelease { major: 1, minor: 26 }).unwrap();
        assert_eq!(go126.offsets[field::CYCLES], Some(648));
        assert_eq!(for_release(GoRelease { major: 1, minor: 19 }), None);
        assert_eq!(for_release(GoRelease { major: 1, minor: 28 }), None);
        assert_eq!(known_releases(), "go1.22, go1.23, go1.24, go1.25, go1.26, go1.27");
    }

    #[test]
    fn offsets_are_plausible() {
        for (release, layout) in TABLE {
            let off = |i: usize| layout.offsets[i].unwrap();
            // Declared together, in this order, in every release.
            assert_eq!(off(field::T_MARK), off(field::T_SWEEP_TERM) + 8, "{release}");
            assert_eq!(off(field::T_MARK_TERM), off(field::T_MARK) + 8, "{release}");
            assert_eq!(off(field::T_END), off(field::T_MARK_TERM) + 8, "{release}");
            assert_eq!(off(field::HEAP1), off(field::HEAP0) + 8, "{release}");
            assert_eq!(off(field::HEAP2), off(field::HEAP1) + 8, "{release}");
            for i in 0..field::COUNT {
                let align = if field::is_u32(i) { 4 } else { 8 };
                assert_eq!(off(i) % align, 0, "{release} {}", field_name(i));
            }
        }
        assert_eq!(field_name(field::GC_PERCENT), "runtime.gcController.gcPercent");
    }

    /// The table against the DWARF of the fixtures the end-to-end tests
    /// built (`target/tmp/gofixtures`), when they are there.
    #[test]
    fn table_matches_fixture_dwarf() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/tmp/gofixtures");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            eprintln!("no fixtures in {}: run the go_gc tests first", dir.display());
            return;
        };
        let mut checked = 0;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(version) = name.strip_prefix("gofixture-").and_then(|n| n.strip_suffix("-plain")) else {
                continue;
            };
            let data = std::fs::read(entry.path()).unwrap();
            let elf = object::File::parse(&*data).unwrap();
            let from_dwarf = crate::process::dwarf::runtime_layout(&elf).unwrap();
            eprintln!("{version}: {:?}", from_dwarf.offsets.map(|o| o.unwrap_or(u64::MAX)));
            assert!(from_dwarf.missing().is_empty(), "{version}: {:?}", from_dwarf.missing());
            match GoRelease::parse(version).and_then(for_release) {
                Some(table) => {
                    assert_eq!(table, from_dwarf, "{version}: table vs DWARF");
                    checked += 1;
                }
                None => eprintln!("{version}: not in the table"),
            }
        }
        eprintln!("{checked} releases checked against fixture DWARF");
    }
}
