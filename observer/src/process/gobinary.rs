//! One Go executable: its build info, the runtime symbols the probes need and
//! its loadable segments. Read once per binary (device + inode) and shared by
//! every process that runs it.

use std::{collections::HashMap, fs::File, path::Path};

use object::{Object, ObjectKind, ObjectSection, ObjectSegment, ObjectSymbol, ReadCache, ReadRef};

use super::{
    buildinfo::{self, BuildInfo, BuildInfoError},
    dwarf::{self, DwarfError},
    layout::RuntimeLayout,
    pclntab::{Pclntab, PclntabError},
    prologue,
};

pub const GC_MARK_TERMINATION: &str = "runtime.gcMarkTermination";
pub const WORK: &str = "runtime.work";
/// Longest stack-check prologue read.
const PROLOGUE_MAX: u64 = 32;

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
    /// File offset for the uprobe on `runtime.gcMarkTermination`: just after
    /// its stack check (from `.symtab`, or `.gopclntab` when stripped).
    pub gc_mark_termination: Option<u64>,
    /// Link-time address of `runtime.work`.
    pub work: Option<u64>,
    /// Loadable segments as (virtual address, file offset).
    pub segments: Vec<(u64, u64)>,
    /// The binary has no `.symtab` (built with `-ldflags=-s`).
    pub stripped: bool,
    /// Runtime struct layout from the binary's DWARF, or why there is none
    /// (then the per-release table is used).
    pub dwarf_layout: Result<RuntimeLayout, DwarfError>,
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
        for symbol in elf.symbols() {
            match symbol.name() {
                Ok(GC_MARK_TERMINATION) => gc_mark_termination = file_offset(&elf, &symbol),
                Ok(WORK) => work = Some(symbol.address()),
                _ => {}
            }
        }
        if gc_mark_termination.is_none() {
            // Stripped: the runtime's own function table still names it.
            gc_mark_termination = match pclntab_entry(&elf, GC_MARK_TERMINATION) {
                Ok(entry) => entry.and_then(|addr| vaddr_file_offset(&elf, addr)),
                Err(err) => {
                    tracing::debug!("{}: {err}", name());
                    None
                }
            };
        }
        // After the stack check: a stack growth restarts the function from
        // its entry, which would report one cycle twice.
        let gc_mark_termination = gc_mark_termination.map(|entry| {
            let code = (&cache).read_bytes_at(entry, PROLOGUE_MAX).unwrap_or_default();
            match prologue::stack_check_len(code) {
                Some(len) => entry + len as u64,
                None => {
                    tracing::debug!("{}: no stack check known at {GC_MARK_TERMINATION}'s entry", name());
                    entry
                }
            }
        });
        let segments = elf.segments().map(|s| (s.address(), s.file_range().0)).collect();
        let dwarf_layout = dwarf::runtime_layout(&elf);
        Ok(Some(Self {
            build,
            pie: elf.kind() == ObjectKind::Dynamic,
            gc_mark_termination,
            work,
            segments,
            stripped: elf.section_by_name(".symtab").is_none(),
            dwarf_layout,
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

/// Entry address of function `name` from `.gopclntab`.
fn pclntab_entry<'a, R: object::ReadRef<'a>>(elf: &object::File<'a, R>, name: &str) -> Result<Option<u64>, PclntabError> {
    // PIE binaries keep it in RELRO under a longer name.
    let Some(section) = [".gopclntab", ".data.rel.ro.gopclntab"].iter().find_map(|n| elf.section_by_name(n)) else {
        return Ok(None);
    };
    let Ok(data) = section.data() else { return Ok(None) };
    let table = Pclntab::parse(data)?;
    let Some(entry) = table.entry_offset(name) else { return Ok(None) };
    let relocs = relative_relocations(elf);
    // The header's textStart is 0 in the files of recent releases (or filled
    // by a dynamic relocation in PIE); the runtime's module data has it too.
    let header = section.address() + table.text_start_offset() as u64;
    let text = relocs
        .get(&header)
        .copied()
        .or(table.text_start())
        .filter(|&start| start != 0)
        .or_else(|| moduledata_text(elf, &relocs, section.address(), table.funcname_offset() as u64));
    Ok(text.and_then(|start| start.checked_add(entry)))
}

/// Dynamic relocations of a PIE binary as (where, link-time target).
fn relative_relocations<'a, R: object::ReadRef<'a>>(elf: &object::File<'a, R>) -> HashMap<u64, u64> {
    let Some(relocs) = elf.dynamic_relocations() else { return HashMap::new() };
    relocs.filter_map(|(at, r)| Some((at, u64::try_from(r.addend()).ok()?))).collect()
}

/// `runtime.firstmoduledata.text`. The module data starts with a pointer to
/// the pclntab header and a slice of its name table (pointer, len, cap),
/// which identify it; `text` is its 23rd word (Go 1.18 and later:
/// pcHeader, six slices, findfunctab, minpc, maxpc, text).
fn moduledata_text<'a, R: object::ReadRef<'a>>(
    elf: &object::File<'a, R>,
    relocs: &HashMap<u64, u64>,
    pclntab: u64,
    funcname_offset: u64,
) -> Option<u64> {
    const WORD: u64 = 8;
    const TEXT: u64 = 22;
    let funcnametab = pclntab.checked_add(funcname_offset)?;
    // PIE: the pointers are relocations, their targets the addends.
    let from_relocs = relocs.iter().find_map(|(&at, &target)| {
        (target == pclntab && relocs.get(&(at + WORD)) == Some(&funcnametab))
            .then(|| relocs.get(&(at + TEXT * WORD)).copied())
            .flatten()
    });
    if from_relocs.is_some() {
        return from_relocs;
    }
    // Otherwise the pointers are in the file, in the runtime's data (its own
    // section since Go 1.26).
    [".go.module", ".noptrdata", ".data"].iter().filter_map(|n| elf.section_by_name(n)).find_map(|section| {
        let data = section.data().ok()?;
        let word = |at: usize| Some(u64::from_le_bytes(data.get(at..at + 8)?.try_into().ok()?));
        (0..data.len()).step_by(8).find_map(|at| {
            (word(at)? == pclntab && word(at + 8)? == funcnametab).then(|| word(at + TEXT as usize * 8)).flatten()
        })
    })
}

/// The file offset of link-time address `addr`, from the section holding it.
fn vaddr_file_offset<'a, R: object::ReadRef<'a>>(elf: &object::File<'a, R>, addr: u64) -> Option<u64> {
    let section = elf.sections().find(|s| s.address() <= addr && addr < s.address() + s.size())?;
    let (offset, _) = section.file_range()?;
    addr.checked_sub(section.address())?.checked_add(offset)
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
