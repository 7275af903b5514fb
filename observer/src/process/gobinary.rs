//! One Go executable: its build info, the runtime symbols the probes need and
//! its loadable segments. Read once per binary (device + inode) and shared by
//! every process that runs it.

use std::{collections::HashMap, fs::File, path::Path};

use object::{Object, ObjectKind, ObjectSection, ObjectSegment, ObjectSymbol, ReadCache, ReadRef};

use super::{
    buildinfo::{self, BuildInfo, BuildInfoError},
    dwarf::{self, DwarfError},
    layout::{Global, RuntimeLayout},
    memprofile::{self, MemProfileGlobals},
    pclntab::{Pclntab, PclntabError},
    prologue, x86,
};

/// Called only by `runtime.gcMarkTermination`, once per cycle, after the
/// cycle's figures are final (Go 1.19–1.27): the GC event's probe.
pub const FREE_STACK_SPANS: &str = "runtime.freeStackSpans";
/// A goroutine's mark assist (most calls only take background credit).
pub const GC_ASSIST_ALLOC: &str = "runtime.gcAssistAlloc";
/// The mark work of an assist: `gcAssistAlloc1(gp *g, scanWork int64)`.
pub const GC_ASSIST_ALLOC1: &str = "runtime.gcAssistAlloc1";
/// Heap growth: `(p *pageAlloc) grow(base, size uintptr)`, called only by
/// `(*mheap).grow`, with exactly what the heap grows by.
pub const PAGE_ALLOC_GROW: &str = "runtime.(*pageAlloc).grow";
/// Memory handed back to the OS: `sysUnusedOS(v unsafe.Pointer, n uintptr)`.
pub const SYS_UNUSED_OS: &str = "runtime.sysUnusedOS";
/// One of the runtime's memory-profile samples: `mProf_Malloc(mp, p, size)`
/// (Go 1.23 and later; `(p, size)` before).
pub const MPROF_MALLOC: &str = "runtime.mProf_Malloc";
/// A new span for one size class: `(c *mcache) refill(spc spanClass)`.
pub const MCACHE_REFILL: &str = "runtime.(*mcache).refill";
/// An allocation over 32 KiB: `(c *mcache) allocLarge(size uintptr, noscan bool)`.
pub const MCACHE_ALLOC_LARGE: &str = "runtime.(*mcache).allocLarge";
const FUNCTIONS: [&str; 8] = [
    FREE_STACK_SPANS,
    GC_ASSIST_ALLOC,
    GC_ASSIST_ALLOC1,
    PAGE_ALLOC_GROW,
    SYS_UNUSED_OS,
    MPROF_MALLOC,
    MCACHE_REFILL,
    MCACHE_ALLOC_LARGE,
];
/// Decoded, not probed: they locate the memory-profile globals ([`memprofile`]).
const SCHEDINIT: &str = "runtime.schedinit";
const RUNTIME_INIT: &str = "runtime.init";
const MEM_PROFILE_RATE: &str = "runtime.MemProfileRate";
const DISABLE_MEMORY_PROFILING: &str = "runtime.disableMemoryProfiling";
/// Longest stack-check prologue read.
const PROLOGUE_MAX: u64 = 32;
/// Longest function whose code is decoded for its returns.
const DECODE_MAX: u64 = 64 << 10;

#[derive(Debug, thiserror::Error)]
pub enum GoBinaryError {
    #[error("opening {path}: {source}")]
    Open { path: String, source: std::io::Error },
    #[error("{path} is not a readable ELF file: {source}")]
    Elf { path: String, source: object::Error },
    #[error("{path}: {source}")]
    BuildInfo { path: String, source: BuildInfoError },
}

/// A runtime function as found in the binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Function {
    /// File offset of its entry.
    offset: u64,
    /// Code length (`.symtab` size, or up to the next function in `.gopclntab`).
    len: Option<u64>,
}

#[derive(Debug)]
pub struct GoBinary {
    pub build: BuildInfo,
    /// Position-independent (ET_DYN): globals move by the load bias.
    pub pie: bool,
    /// File offsets for uprobes at function entry, just after the stack
    /// check, by function name (from `.symtab`, or `.gopclntab` when
    /// stripped); a function the binary lacks has none.
    pub probes: HashMap<&'static str, u64>,
    /// File offsets of `runtime.gcAssistAlloc`'s return instructions, or why
    /// there are none.
    pub assist_returns: Result<Vec<u64>, String>,
    /// Link-time addresses of `runtime.work` and `runtime.gcController`.
    pub globals: HashMap<Global, u64>,
    /// Loadable segments as (virtual address, file offset).
    pub segments: Vec<(u64, u64)>,
    /// The lowest virtual address of an executable segment: where the
    /// kernel's `mm->start_code` points, less the load bias.
    pub exec_vaddr: Option<u64>,
    /// The binary has no `.symtab` (built with `-ldflags=-s`).
    pub stripped: bool,
    /// Runtime struct layout from the binary's DWARF, or why there is none
    /// (then the per-release table is used).
    pub dwarf_layout: Result<RuntimeLayout, DwarfError>,
    /// The runtime's memory profiling in this binary.
    pub mem_profile: MemProfile,
}

/// Whether the runtime samples allocations itself, and where its rate is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemProfile {
    /// Link-time address of `runtime.MemProfileRate`, if found.
    pub rate_at: Option<u64>,
    /// The linker turned memory profiling off (nothing reads the profile):
    /// `runtime.mProf_Malloc` is never called. `None`: not known.
    pub disabled: Option<bool>,
}

/// The build info of the Go program at `path`, `Ok(None)` for an ELF file
/// that is not one: the few pages that `--go-process` needs to decide, so
/// that a large binary nobody selected is never read further.
pub fn build_info(path: &Path) -> Result<Option<BuildInfo>, GoBinaryError> {
    let file = File::open(path).map_err(|source| GoBinaryError::Open { path: path.display().to_string(), source })?;
    let cache = ReadCache::new(file);
    let elf = object::File::parse(&cache)
        .map_err(|source| GoBinaryError::Elf { path: path.display().to_string(), source })?;
    read_build_info(&elf, path)
}

fn read_build_info<'a, R: ReadRef<'a>>(
    elf: &object::File<'a, R>,
    path: &Path,
) -> Result<Option<BuildInfo>, GoBinaryError> {
    let name = || path.display().to_string();
    let Some(section) = elf.section_by_name(".go.buildinfo") else { return Ok(None) };
    let data = section.data().map_err(|source| GoBinaryError::Elf { path: name(), source })?;
    buildinfo::parse(data, |addr, len| read_at(elf, addr, len))
        .map(Some)
        .map_err(|source| GoBinaryError::BuildInfo { path: name(), source })
}

impl GoBinary {
    /// `Ok(None)` for an ELF file that is not a Go program.
    pub fn open(path: &Path) -> Result<Option<Self>, GoBinaryError> {
        let name = || path.display().to_string();
        let file = File::open(path).map_err(|source| GoBinaryError::Open { path: name(), source })?;
        // Reads only the parts asked for: Go binaries can be large.
        let cache = ReadCache::new(file);
        let elf = object::File::parse(&cache).map_err(|source| GoBinaryError::Elf { path: name(), source })?;
        let Some(build) = read_build_info(&elf, path)? else { return Ok(None) };

        let mut functions: HashMap<&'static str, Function> = HashMap::new();
        let mut globals = HashMap::new();
        let mut profile_globals = (None, None);
        for symbol in elf.symbols() {
            let Ok(sym) = symbol.name() else { continue };
            if sym == MEM_PROFILE_RATE {
                profile_globals.0 = Some(symbol.address());
            } else if sym == DISABLE_MEMORY_PROFILING {
                profile_globals.1 = Some(symbol.address());
            } else if let Some(&f) = LOOKED_UP.iter().find(|&&f| f == sym) {
                if let Some(offset) = file_offset(&elf, &symbol) {
                    let len = Some(symbol.size()).filter(|&l| l != 0);
                    functions.insert(f, Function { offset, len });
                }
            } else if let Some(g) = [Global::Work, Global::GcController].into_iter().find(|g| g.symbol() == sym) {
                globals.insert(g, symbol.address());
            }
        }
        if functions.len() < LOOKED_UP.len() {
            // Stripped: the runtime's own function table still names them.
            match pclntab_functions(&elf, &LOOKED_UP) {
                Ok(found) => {
                    for (f, (addr, end)) in found {
                        if let (false, Some(offset)) = (functions.contains_key(f), vaddr_file_offset(&elf, addr)) {
                            functions.insert(f, Function { offset, len: end.checked_sub(addr) });
                        }
                    }
                }
                Err(err) => tracing::debug!("{}: {err}", name()),
            }
        }
        // After the stack check: a stack growth restarts the function from
        // its entry, which would count one call twice.
        let mem_profile =
            mem_profile(&elf, &cache, profile_globals, functions.get(SCHEDINIT), functions.get(RUNTIME_INIT));
        let probes = functions
            .iter()
            .filter(|(f, _)| FUNCTIONS.contains(f))
            .map(|(&f, func)| {
                let code = (&cache).read_bytes_at(func.offset, PROLOGUE_MAX).unwrap_or_default();
                let at = match prologue::stack_check_len(code) {
                    Some(len) => func.offset + len as u64,
                    None => {
                        tracing::debug!("{}: no stack check known at {f}'s entry", name());
                        func.offset
                    }
                };
                (f, at)
            })
            .collect();
        let assist_returns = match functions.get(GC_ASSIST_ALLOC) {
            None => Err(format!("no function {GC_ASSIST_ALLOC}")),
            Some(func) => return_offsets(&cache, func),
        };
        let segments = elf.segments().map(|s| (s.address(), s.file_range().0)).collect();
        const PF_X: u32 = 1;
        let exec_vaddr = elf
            .segments()
            .filter(|s| matches!(s.flags(), object::SegmentFlags::Elf { p_flags } if p_flags & PF_X != 0))
            .map(|s| s.address())
            .min();
        let dwarf_layout = dwarf::runtime_layout(&elf);
        Ok(Some(Self {
            build,
            pie: elf.kind() == ObjectKind::Dynamic,
            probes,
            assist_returns,
            globals,
            segments,
            exec_vaddr,
            stripped: elf.section_by_name(".symtab").is_none(),
            dwarf_layout,
            mem_profile,
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

/// Every function looked up by name.
const LOOKED_UP: [&str; FUNCTIONS.len() + 2] = {
    let mut all = [SCHEDINIT; FUNCTIONS.len() + 2];
    all[FUNCTIONS.len() + 1] = RUNTIME_INIT;
    let mut i = 0;
    while i < FUNCTIONS.len() {
        all[i] = FUNCTIONS[i];
        i += 1;
    }
    all
};

/// The memory-profile globals from `.symtab` (`(rate, disabled flag)`
/// addresses), else from `runtime.schedinit`'s code; the flag's value is
/// read from the file (the linker writes it; the runtime never changes it).
fn mem_profile<'a, R: ReadRef<'a>>(
    elf: &object::File<'a, R>,
    data: R,
    symbols: (Option<u64>, Option<u64>),
    schedinit: Option<&Function>,
    runtime_init: Option<&Function>,
) -> MemProfile {
    let decode = |f: Option<&Function>, find: fn(&[u8], u64) -> Option<MemProfileGlobals>| {
        let f = f?;
        let code = data.read_bytes_at(f.offset, f.len?.min(DECODE_MAX)).ok()?;
        let vaddr = elf.segments().find_map(|s| {
            let (off, len) = s.file_range();
            (off <= f.offset && f.offset < off + len).then(|| s.address() + (f.offset - off))
        })?;
        find(code, vaddr)
    };
    let decoded = || {
        decode(schedinit, memprofile::from_schedinit).or_else(|| decode(runtime_init, memprofile::from_runtime_init))
    };
    let globals = match symbols {
        (Some(rate_at), Some(disabled_at)) => Some(MemProfileGlobals { rate_at, disabled_at }),
        // Without the flag symbol the linker left profiling on (it creates
        // the symbol only to set it).
        (Some(rate_at), None) => return MemProfile { rate_at: Some(rate_at), disabled: Some(false) },
        _ => decoded(),
    };
    let Some(g) = globals else { return MemProfile { rate_at: None, disabled: None } };
    // Left zero, it lies in a section without file data (`.noptrbss`).
    let in_bss = || {
        elf.sections().any(|s| {
            s.kind() == object::SectionKind::UninitializedData
                && s.address() <= g.disabled_at
                && g.disabled_at < s.address() + s.size()
        })
    };
    let disabled = read_at(elf, g.disabled_at, 1).map(|b| b[0] != 0).or_else(|| in_bss().then_some(false));
    MemProfile { rate_at: Some(g.rate_at), disabled }
}

/// A function's name and (entry, end) link-time addresses.
type FunctionRange = (&'static str, (u64, u64));

/// The functions of `names` that `.gopclntab` lists.
fn pclntab_functions<'a, R: object::ReadRef<'a>>(
    elf: &object::File<'a, R>,
    names: &[&'static str],
) -> Result<Vec<FunctionRange>, PclntabError> {
    // PIE binaries keep it in RELRO under a longer name.
    let Some(section) = [".gopclntab", ".data.rel.ro.gopclntab"].iter().find_map(|n| elf.section_by_name(n)) else {
        return Ok(Vec::new());
    };
    let Ok(data) = section.data() else { return Ok(Vec::new()) };
    let table = Pclntab::parse(data)?;
    let found: Vec<_> = names.iter().filter_map(|&n| table.func_range(n).map(|r| (n, r))).collect();
    if found.is_empty() {
        return Ok(found);
    }
    let relocs = relative_relocations(elf);
    // The header's textStart is 0 in the files of recent releases (or filled
    // by a dynamic relocation in PIE); the runtime's module data has it too.
    let header = section.address() + table.text_start_offset() as u64;
    let text = relocs
        .get(&header)
        .copied()
        .or(table.text_start())
        .filter(|&start| start != 0)
        .or_else(|| Moduledata::find(elf, &relocs, section.address(), table.funcname_offset() as u64)?.text());
    let Some(text) = text else { return Ok(Vec::new()) };
    Ok(found
        .into_iter()
        .filter_map(|(n, (start, end))| Some((n, (text.checked_add(start)?, text.checked_add(end)?))))
        .collect())
}

/// File offsets of the return instructions of `func`, from its decoded
/// machine code (amd64): where the probes that end an assist go.
fn return_offsets<'a, R: ReadRef<'a>>(data: R, func: &Function) -> Result<Vec<u64>, String> {
    let len = func.len.ok_or_else(|| format!("{GC_ASSIST_ALLOC}'s length is unknown"))?;
    if len > DECODE_MAX {
        return Err(format!("{GC_ASSIST_ALLOC} is {len} bytes long, more than the {DECODE_MAX} decoded"));
    }
    let code = data.read_bytes_at(func.offset, len).map_err(|()| format!("{GC_ASSIST_ALLOC}'s code is unreadable"))?;
    let returns = x86::return_offsets(code);
    if returns.is_empty() {
        return Err(format!("no return instruction found in {GC_ASSIST_ALLOC}"));
    }
    Ok(returns.into_iter().map(|at| func.offset + at).collect())
}

/// Dynamic relocations of a PIE binary as (where, link-time target).
pub(super) fn relative_relocations<'a, R: object::ReadRef<'a>>(elf: &object::File<'a, R>) -> HashMap<u64, u64> {
    let Some(relocs) = elf.dynamic_relocations() else { return HashMap::new() };
    relocs.filter_map(|(at, r)| Some((at, u64::try_from(r.addend()).ok()?))).collect()
}

/// `runtime.firstmoduledata`, the runtime's description of the binary's
/// module. It starts with a pointer to the pclntab header and a slice of its
/// name table (pointer, len, cap), which identify it.
pub(super) struct Moduledata<'e, 'a, R: object::ReadRef<'a>> {
    elf: &'e object::File<'a, R>,
    relocs: &'e HashMap<u64, u64>,
    /// Its link-time address.
    address: u64,
}

impl<'e, 'a, R: object::ReadRef<'a>> Moduledata<'e, 'a, R> {
    const WORD: u64 = 8;
    /// `text` is its 23rd word (Go 1.18 and later: pcHeader, six slices,
    /// findfunctab, minpc, maxpc, text).
    const TEXT: u64 = 22;

    pub(super) fn find(
        elf: &'e object::File<'a, R>,
        relocs: &'e HashMap<u64, u64>,
        pclntab: u64,
        funcname_offset: u64,
    ) -> Option<Self> {
        let funcnametab = pclntab.checked_add(funcname_offset)?;
        // PIE: the pointers are relocations, their targets the addends.
        let from_relocs = relocs.iter().find_map(|(&at, &target)| {
            (target == pclntab && relocs.get(&(at + Self::WORD)) == Some(&funcnametab)).then_some(at)
        });
        // Otherwise the pointers are in the file, in the runtime's data (its
        // own section since Go 1.26).
        let address = from_relocs.or_else(|| {
            [".go.module", ".noptrdata", ".data"].iter().filter_map(|n| elf.section_by_name(n)).find_map(|section| {
                let data = section.data().ok()?;
                let word = |at: usize| Some(u64::from_le_bytes(data.get(at..at + 8)?.try_into().ok()?));
                (0..data.len())
                    .step_by(8)
                    .find(|&at| word(at) == Some(pclntab) && word(at + 8) == Some(funcnametab))
                    .map(|at| section.address() + at as u64)
            })
        })?;
        Some(Self { elf, relocs, address })
    }

    /// Its word `index`: a relocation's target in PIE, else the file's.
    pub(super) fn word(&self, index: u64) -> Option<u64> {
        let at = self.address.checked_add(index.checked_mul(Self::WORD)?)?;
        self.relocs.get(&at).copied().or_else(|| {
            let bytes = read_at(self.elf, at, Self::WORD)?;
            Some(u64::from_le_bytes(bytes.try_into().ok()?))
        })
    }

    pub(super) fn text(&self) -> Option<u64> {
        self.word(Self::TEXT)
    }

    /// `gofunc` (`go:func.*`), which funcdata offsets are relative to. It
    /// follows `rodata` (the start of `.rodata`) in every release since Go
    /// 1.18, whose position moved (Go 1.20 added `covctrs`, Go 1.27
    /// `typedesclen`, `itaboffset` and `itabsize`); the last match wins, as
    /// `types` may equal `rodata` too.
    pub(super) fn gofunc(&self) -> Option<u64> {
        let rodata = self.elf.section_by_name(".rodata")?.address();
        (Self::TEXT + 1..Self::TEXT + 24)
            .rev()
            .filter(|&i| self.word(i - 1) == Some(rodata))
            .filter_map(|i| self.word(i))
            .find(|&gofunc| gofunc != rodata)
    }
}

/// The file offset of link-time address `addr`, from the section holding it.
fn vaddr_file_offset<'a, R: object::ReadRef<'a>>(elf: &object::File<'a, R>, addr: u64) -> Option<u64> {
    let section = elf.sections().find(|s| s.address() <= addr && addr < s.address() + s.size())?;
    let (offset, _) = section.file_range()?;
    addr.checked_sub(section.address())?.checked_add(offset)
}

/// A symbol's file offset: what a uprobe is attached at.
fn file_offset<'a, R: object::ReadRef<'a>>(
    elf: &object::File<'a, R>,
    symbol: &object::Symbol<'a, '_, R>,
) -> Option<u64> {
    let section = elf.section_by_index(symbol.section_index()?).ok()?;
    let (offset, _) = section.file_range()?;
    symbol.address().checked_sub(section.address())?.checked_add(offset)
}

/// Reads `len` bytes of the image at virtual address `addr` (build info
/// pointers of Go < 1.18).
pub(super) fn read_at<'a, R: object::ReadRef<'a>>(elf: &object::File<'a, R>, addr: u64, len: u64) -> Option<Vec<u8>> {
    let section = elf.sections().find(|s| s.address() <= addr && addr < s.address() + s.size())?;
    let data = section.data().ok()?;
    let start = usize::try_from(addr - section.address()).ok()?;
    let end = start.checked_add(usize::try_from(len).ok()?)?;
    data.get(start..end).map(<[u8]>::to_vec)
}
