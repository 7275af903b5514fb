//! A process's executable mappings (`/proc/PID/maps`), read when its samples
//! are drained: the process may be gone by the time they are symbolized.

use std::path::PathBuf;

/// One executable mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    pub start: u64,
    pub end: u64,
    /// File offset of `start`.
    pub offset: u64,
    /// `(major << 8 | minor, inode)` as `maps` shows them; `(0, 0)` for anonymous memory.
    pub dev_ino: (u64, u64),
    /// The file, or a pseudo-name such as `[vdso]`.
    pub path: String,
}

impl Mapping {
    /// The file as this agent can open it (through the process's root, so
    /// a file of another mount namespace or one deleted is still found).
    pub fn open_path(&self, pid: u32) -> PathBuf {
        PathBuf::from(format!("/proc/{pid}/map_files/{:x}-{:x}", self.start, self.end))
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcessMaps {
    /// Executable mappings by start address.
    pub mappings: Vec<Mapping>,
}

impl ProcessMaps {
    pub fn read(pid: u32) -> std::io::Result<ProcessMaps> {
        Ok(Self::parse(&std::fs::read_to_string(format!("/proc/{pid}/maps"))?))
    }

    /// `00400000-00452000 r-xp 00000000 08:02 173521  /usr/bin/app` lines.
    pub fn parse(text: &str) -> ProcessMaps {
        let mut mappings: Vec<Mapping> = text.lines().filter_map(parse_line).collect();
        mappings.sort_by_key(|m| m.start);
        ProcessMaps { mappings }
    }

    /// The mapping holding `addr`.
    pub fn find(&self, addr: u64) -> Option<&Mapping> {
        let i = self.mappings.partition_point(|m| m.start <= addr).checked_sub(1)?;
        let m = &self.mappings[i];
        (addr < m.end).then_some(m)
    }
}

fn parse_line(line: &str) -> Option<Mapping> {
    let mut f = line.splitn(6, ' ');
    let (range, perms, offset, dev, inode) = (f.next()?, f.next()?, f.next()?, f.next()?, f.next()?);
    if perms.as_bytes().get(2) != Some(&b'x') {
        return None;
    }
    let (start, end) = range.split_once('-')?;
    let (major, minor) = dev.split_once(':')?;
    let hex = |s: &str| u64::from_str_radix(s, 16).ok();
    Some(Mapping {
        start: hex(start)?,
        end: hex(end)?,
        offset: hex(offset)?,
        dev_ino: (hex(major)? << 8 | hex(minor)?, inode.parse().ok()?),
        path: f.next().unwrap_or("").trim_start().to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAPS: &str = "\
00400000-0047c000 r-xp 00000000 08:02 1234                               /tmp/app
0047c000-00500000 r--p 0007c000 08:02 1234                               /tmp/app
7ffd1000-7ffd3000 r-xp 00000000 00:00 0                                  [vdso]
7f0000000000-7f0000001000 r-xp 00002000 fd:01 99 /usr/lib/with space.so (deleted)
";

    #[test]
    fn keeps_executable_mappings_with_their_files() {
        let maps = ProcessMaps::parse(MAPS);
        assert_eq!(maps.mappings.len(), 3);
        let app = maps.find(0x401000).unwrap();
        assert_eq!((app.start, app.end, app.offset, app.dev_ino), (0x400000, 0x47c000, 0, (0x802, 1234)));
        assert_eq!(app.path, "/tmp/app");
        assert_eq!(maps.find(0x47c000), None, "not executable");
        assert_eq!(maps.find(0x7ffd1fff).unwrap().path, "[vdso]");
        let lib = maps.find(0x7f0000000010).unwrap();
        assert_eq!((lib.offset, lib.dev_ino), (0x2000, (0xfd01, 99)));
        assert_eq!(lib.path, "/usr/lib/with space.so (deleted)");
        assert_eq!(maps.find(0x10), None);
    }

    #[test]
    fn odd_lines_are_skipped() {
        let maps = ProcessMaps::parse("garbage\n00400000 r-xp\nzz-yy r-xp 0 08:02 1 /x\n");
        assert!(maps.mappings.is_empty());
    }
}
