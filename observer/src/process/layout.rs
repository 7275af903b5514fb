//! Per-Go-version layouts of runtime structs: the one place that knows them.
//!
//! Used when a binary carries no DWARF to derive them from (`-ldflags=-w`,
//! stripped); with DWARF the binary's own layout wins (`dwarf.rs`). Every
//! entry was read from the DWARF of a fixture built with that release and is
//! checked by the end-to-end tests (`go_gc`, variant `NoDwarf`) against
//! `GODEBUG=gctrace=1`; add a release only together with such a run.

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

/// Byte offsets inside runtime globals for one release.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuntimeLayout {
    /// `runtime.workType.cycles` (u32), from the start of `runtime.work`.
    pub work_cycles: u64,
}

/// (release, layout), read from the release's DWARF (`runtime.workType`).
const TABLE: &[(GoRelease, RuntimeLayout)] = &[
    (GoRelease { major: 1, minor: 22 }, RuntimeLayout { work_cycles: 400 }),
    (GoRelease { major: 1, minor: 23 }, RuntimeLayout { work_cycles: 424 }),
    (GoRelease { major: 1, minor: 24 }, RuntimeLayout { work_cycles: 424 }),
    (GoRelease { major: 1, minor: 25 }, RuntimeLayout { work_cycles: 512 }),
    (GoRelease { major: 1, minor: 26 }, RuntimeLayout { work_cycles: 648 }),
    (GoRelease { major: 1, minor: 27 }, RuntimeLayout { work_cycles: 648 }),
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
        assert_eq!(for_release(GoRelease { major: 1, minor: 22 }), Some(RuntimeLayout { work_cycles: 400 }));
        assert_eq!(for_release(GoRelease { major: 1, minor: 26 }), Some(RuntimeLayout { work_cycles: 648 }));
        assert_eq!(for_release(GoRelease { major: 1, minor: 19 }), None);
        assert_eq!(for_release(GoRelease { major: 1, minor: 28 }), None);
        assert_eq!(known_releases(), "go1.22, go1.23, go1.24, go1.25, go1.26, go1.27");
    }
}
