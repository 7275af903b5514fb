//! One Go executable: its build info, the runtime symbols the probes need and
//! its loadable segments. Read once per binary (device + inode) and shared by
//! every process that runs it.

use std::{fs::File, path::Path};

use object::{Object, ObjectKind, ObjectSection, ObjectSegment, ObjectSymbol, ReadCache};

use super::buildinfo::{self, BuildInfo, BuildInfoError};

pub const GC_MARK_TERMINATION: &str = "runtime.gcMarkTermination";
pub const WORK: &str = "runtime.work";

#[derive(Debug, thiserror::Error)]
pub enum GoBinaryError {
    #[error("opening {path}: {source}")]
    Open { path: String, source: std::io::Error },
    #[error("{path} is not a readable ELF file: {source}")]
    Elf { path: String, source: object::Error },
    #[error("{path}: {source}")]
    BuildInfo { path: String, source: BuildInfoError },
}

#[derive(Debug)]
pub struct GoBinary {
    pub build: BuildInfo,
    /// Position-independent (ET_DYN): globals move by the load bias.
    pub pie: bool,
    /// File offset of `runtime.gcMarkTermination`'s entry, for the uprobe.
    pub gc_mark_termination: Option<u64>,
    /// Link-time address of `runtime.work`.
    pub work: Option<u64>,
    /// Loadable segments as (virtual address, file offset).
    pub segments: Vec<(u64, u64)>,
    /// The binary has no `.symtab` (built with `-ldflags=-s`).
    pub stripped: bool,
}

impl GoBinary {
    /// `Ok(None)` for an ELF file that is not a Go program.
    pub fn open(path: &Path) -> Result<Option<Self>, GoBinaryError> {
        let name = || path.display().to_string();
        let file = File::open(path).map_err(|source| GoBinaryError::Open { path: name(), source })?;
        // Reads only the parts asked for: Go binaries can be large.
        let cache = ReadCache::new(file);
        let elf = object::File::parse(&cache).map_err(|source| GoBinaryError::Elf { path: name(), source })?;
        let Some(section) = elf.section_by_name(".go.buildinfo") else { return Ok(None) };
        let data = section.data().map_err(|source| GoBinaryError::Elf { path: name(), source })?;
        let build = buildinfo::parse(data, |addr, len| read_at(&elf, addr, len))
            .map_err(|source| GoBinaryError::BuildInfo { path: name(), source })?;

        let mut gc_mark_termination = None;
        let mut work = None;
        // TODO(issue 4): stripped binaries: resolve functions from .gopclntab.
        for symbol in elf.symbols() {
            match symbol.name() {
                Ok(GC_MARK_TERMINATION) => gc_mark_termination = file_offset(&elf, &symbol),
                Ok(WORK) => work = Some(symbol.address()),
                _ => {}
            }
        }
        let segments = elf.segments().map(|s| (s.address(), s.file_range().0)).collect();
        Ok(Some(Self {
            build,
            pie: elf.kind() == ObjectKind::Dynamic,
            gc_mark_termination,
            work,
            segments,
            stripped: elf.section_by_name(".symtab").is_none(),
        }))
    }

    /// Where the binary's link-time address `addr` is in a process whose
    /// mapping of file offset `map_offset` starts at `map_start`.
    pub fn relocate(&self, addr: u64, map_start: u64, map_offset: u64) -> Option<u64> {
        if !self.pie {
            return Some(addr);
        }
        const PAGE: u64 = 4096;
        let (vaddr, _) = self.segments.iter().find(|(_, off)| off & !(PAGE - 1) == map_offset)?;
        let bias = map_start.checked_sub(vaddr & !(PAGE - 1))?;
        addr.checked_add(bias)
    }
}

/// A symbol's file offset: what a uprobe is attached at.
fn file_offset<'a, R: object::ReadRef<'a>>(elf: &object::File<'a, R>, symbol: &object::Symbol<'a, '_, R>) -> Option<u64> {
    let section = elf.section_by_index(symbol.section_index()?).ok()?;
    let (offset, _) = section.file_range()?;
    symbol.address().checked_sub(section.address())?.checked_add(offset)
}

/// Reads `len` bytes of the image at virtual address `addr` (build info
/// pointers of Go < 1.18).
fn read_at<'a, R: object::ReadRef<'a>>(elf: &object::File<'a, R>, addr: u64, len: u64) -> Option<Vec<u8>> {
    let section = elf.sections().find(|s| s.address() <= addr && addr < s.address() + s.size())?;
    let data = section.data().ok()?;
    let start = usize::try_from(addr - section.address()).ok()?;
    let end = start.checked_add(usize::try_from(len).ok()?)?;
    data.get(start..end).map(<[u8]>::to_vec)
}
