//! Go program counters → function, file and line, inlined calls included,
//! from the binary's own tables (`.gopclntab` and the `go:func.*` data it
//! refers to), which stripped binaries keep: what turns the stacks of a
//! profile into source positions.

use std::{fs::File, ops::Range, path::Path};

use object::{Object, ObjectSection, ReadCache};

use super::{
    gobinary::{Moduledata, relative_relocations},
    pclntab::{self, FUNCDATA_INL_TREE, Pclntab, PclntabError},
};

#[derive(Debug, thiserror::Error)]
pub enum GoSymbolsError {
    #[error("opening {path}: {source}")]
    Open { path: String, source: std::io::Error },
    #[error("{path} is not a readable ELF file: {source}")]
    Elf { path: String, source: object::Error },
    #[error("{path} has no .gopclntab section: not a Go program")]
    NotGo { path: String },
    #[error("{path}: {source}")]
    Pclntab { path: String, source: PclntabError },
    #[error("{path}: runtime.firstmoduledata not found, or without {what}")]
    Moduledata { path: String, what: &'static str },
}

/// One frame at a pc.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// As the runtime prints it (`runtime.Frame.Function`).
    pub function: String,
    /// `?` where the tables name none, as the runtime prints it.
    pub file: String,
    /// 0 where the tables have none.
    pub line: u32,
    /// Inlined into the frame that follows it.
    pub inlined: bool,
}

/// The symbol tables of one Go binary, copied out of it.
pub struct GoSymbols {
    pclntab: Vec<u8>,
    /// `go:func.*` up to the end of its section: the funcdata (inlining trees).
    gofunc: Vec<u8>,
    /// Link-time address function entries are relative to.
    text: u64,
}

impl std::fmt::Debug for GoSymbols {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GoSymbols").field("text", &self.text).field("pclntab_len", &self.pclntab.len()).finish()
    }
}

impl GoSymbols {
    pub fn read(path: &Path) -> Result<Self, GoSymbolsError> {
        let name = || path.display().to_string();
        let file = File::open(path).map_err(|source| GoSymbolsError::Open { path: name(), source })?;
        // Reads only the sections asked for: Go binaries can be large.
        let cache = ReadCache::new(file);
        let elf = object::File::parse(&cache).map_err(|source| GoSymbolsError::Elf { path: name(), source })?;
        // PIE binaries keep it in RELRO under a longer name.
        let section = [".gopclntab", ".data.rel.ro.gopclntab"]
            .iter()
            .find_map(|n| elf.section_by_name(n))
            .ok_or_else(|| GoSymbolsError::NotGo { path: name() })?;
        let pclntab = section.data().map_err(|source| GoSymbolsError::Elf { path: name(), source })?.to_vec();
        let table = Pclntab::parse(&pclntab).map_err(|source| GoSymbolsError::Pclntab { path: name(), source })?;
        let relocs = relative_relocations(&elf);
        let missing = |what| GoSymbolsError::Moduledata { path: name(), what };
        let moduledata = Moduledata::find(&elf, &relocs, section.address(), table.funcname_offset() as u64)
            .ok_or_else(|| missing("its text address"))?;
        let text = moduledata.text().ok_or_else(|| missing("its text address"))?;
        let gofunc = moduledata.gofunc().ok_or_else(|| missing("gofunc"))?;
        let gofunc = section_tail(&elf, gofunc).ok_or_else(|| missing("gofunc"))?;
        tracing::debug!("{}: {} bytes of symbol tables kept", name(), pclntab.len() + gofunc.len());
        Ok(Self { pclntab, gofunc, text })
    }

    fn table(&self) -> Option<Pclntab<'_>> {
        Pclntab::parse(&self.pclntab).ok()
    }

    /// Frames at link-time address `addr` (a return address minus 1 for
    /// callers), innermost (most inlined) first; empty when no Go function
    /// covers it.
    pub fn frames(&self, addr: u64) -> Vec<Frame> {
        let Some(table) = self.table() else { return Vec::new() };
        let Some(pc) = addr.checked_sub(self.text).and_then(|pc| u32::try_from(pc).ok()) else { return Vec::new() };
        let Some(func) = table.find_func(pc) else { return Vec::new() };
        let tree =
            table.funcdata(func, FUNCDATA_INL_TREE).and_then(|off| self.gofunc.get(usize::try_from(off).ok()?..));
        table
            .positions(func, pc, tree)
            .into_iter()
            .map(|p| Frame {
                function: pclntab::name_for_print(p.function).into_owned(),
                file: p.file.unwrap_or("?").to_owned(),
                line: p.line,
                inlined: p.inlined,
            })
            .collect()
    }

    /// `observer symbolize`'s output: per address, one line per frame,
    /// innermost first (`ADDR FUNCTION FILE:LINE`, `(inlined)` after those
    /// inlined into the next), or `ADDR ?` where no Go function is.
    pub fn describe(&self, addrs: &[u64]) -> String {
        let text = self.text_range();
        let mut out = String::new();
        for &addr in addrs {
            let frames = self.frames(addr);
            if frames.is_empty() {
                let outside = if text.contains(&addr) { "" } else { " (outside Go text)" };
                out += &format!("{addr:#x} ?{outside}\n");
            }
            for f in frames {
                let inlined = if f.inlined { " (inlined)" } else { "" };
                out += &format!("{addr:#x} {} {}:{}{inlined}\n", f.function, f.file, f.line);
            }
        }
        out
    }

    /// Link-time range of Go text (minpc..maxpc), so callers can tell Go
    /// frames from C (cgo) frames.
    pub fn text_range(&self) -> Range<u64> {
        match self.table().and_then(|t| t.text_offsets()) {
            Some((first, end)) => self.text + u64::from(first)..self.text + u64::from(end),
            None => self.text..self.text,
        }
    }
}

/// The bytes from link-time address `addr` to the end of its section.
fn section_tail<'a, R: object::ReadRef<'a>>(elf: &object::File<'a, R>, addr: u64) -> Option<Vec<u8>> {
    let section = elf.sections().find(|s| s.address() <= addr && addr < s.address() + s.size())?;
    let start = usize::try_from(addr - section.address()).ok()?;
    Some(section.data().ok()?.get(start..)?.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_corrupt_table_has_no_frames() {
        for pclntab in [Vec::new(), vec![0xf1, 0xff, 0xff, 0xff, 0, 0, 1, 8], vec![0xff; 200]] {
            let symbols = GoSymbols { pclntab, gofunc: Vec::new(), text: 0x1000 };
            assert_eq!(symbols.frames(0x1000), []);
            assert_eq!(symbols.frames(0), []);
            assert!(symbols.text_range().is_empty());
            assert_eq!(symbols.describe(&[0x1000]), "0x1000 ? (outside Go text)\n");
        }
    }
}
