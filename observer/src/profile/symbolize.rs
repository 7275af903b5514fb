//! Addresses of sampled stacks → functions, files and lines. Go frames come
//! from the binary's `.gopclntab` (so stripped binaries get names, inlined
//! frames included); kernel frames from kallsyms. Each binary is read once
//! per file identity and shared by every process that runs it.

use std::{collections::HashMap, path::Path, sync::Arc};

use object::{Object, ObjectSection, ObjectSegment};

use super::maps::Mapping;
use crate::{
    kernel::kallsyms::Kallsyms,
    process::gosymbols::{Frame, GoSymbols},
};

const PF_X: u32 = 1;

/// One executable file as the profiles need it.
#[derive(Debug)]
pub struct Binary {
    /// Its Go symbols; `None` for a file that is not Go (or unreadable).
    go: Option<GoSymbols>,
    /// Loadable executable segments: (file offset, link-time address, size).
    segments: Vec<(u64, u64, u64)>,
    /// The GNU build id, else Go's, as hex; empty when it has neither.
    pub build_id: String,
}

impl Binary {
    pub fn read(path: &Path) -> Result<Binary, String> {
        let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
        // Reads only the headers and notes: Go binaries can be large.
        let cache = object::ReadCache::new(file);
        let elf = object::File::parse(&cache).map_err(|e| format!("{}: {e}", path.display()))?;
        let segments = elf
            .segments()
            .filter(|s| s_flags(s) & PF_X != 0)
            .map(|s| (s.file_range().0, s.address(), s.file_range().1))
            .collect();
        let build_id = build_id(&elf);
        // Not every executable is Go (cgo's libc, the vdso): no symbols then.
        let go = GoSymbols::read(path).ok();
        Ok(Binary { go, segments, build_id })
    }

    /// The link-time address of file offset `offset`.
    pub fn link_address(&self, offset: u64) -> Option<u64> {
        self.segments
            .iter()
            .find(|(off, _, len)| (*off..off + len).contains(&offset))
            .map(|(off, vaddr, _)| vaddr + offset - off)
    }

    pub fn frames(&self, link_address: u64) -> Vec<Frame> {
        self.go.as_ref().map(|g| g.frames(link_address)).unwrap_or_default()
    }
}

fn s_flags<'a, S: ObjectSegment<'a>>(s: &S) -> u32 {
    match s.flags() {
        object::SegmentFlags::Elf { p_flags } => p_flags,
        _ => 0,
    }
}

/// The GNU build id note, else Go's (`.note.go.buildid`), as hex.
fn build_id<'a, R: object::ReadRef<'a>>(elf: &object::File<'a, R>) -> String {
    if let Ok(Some(id)) = elf.build_id() {
        return id.iter().map(|b| format!("{b:02x}")).collect();
    }
    // A note: namesz, descsz, type (4 bytes each), "Go\0\0", then the id text.
    let Some(data) = elf.section_by_name(".note.go.buildid").and_then(|s| s.data().ok()) else { return String::new() };
    let descsz = data.get(4..8).map_or(0, |b| u32::from_le_bytes(b.try_into().unwrap_or_default()) as usize);
    data.get(16..16 + descsz).map(|id| String::from_utf8_lossy(id).into_owned()).unwrap_or_default()
}

/// What one user address symbolizes to.
#[derive(Debug, Clone)]
pub struct UserFrame {
    /// Innermost first; empty when unknown.
    pub frames: Vec<Frame>,
    pub build_id: String,
}

/// Every binary read so far, by file identity, and the kernel's symbols.
#[derive(Default)]
pub struct Symbolizer {
    binaries: HashMap<(u64, u64), Option<Arc<Binary>>>,
    kernel: Option<Kallsyms>,
    kernel_read: bool,
    /// Binaries read (the first time each was needed).
    pub read: u64,
}

impl Symbolizer {
    /// The binary of `mapping` in process `pid`, read on first use.
    pub fn binary(&mut self, pid: u32, mapping: &Mapping) -> Option<Arc<Binary>> {
        if mapping.dev_ino.1 == 0 {
            return None;
        }
        if let Some(known) = self.binaries.get(&mapping.dev_ino) {
            return known.clone();
        }
        // Through the process (its mount namespace; a deleted file too),
        // else by the path as this agent sees it.
        let read = Binary::read(&mapping.open_path(pid)).or_else(|_| Binary::read(Path::new(&mapping.path)));
        self.read += 1;
        let binary = read.inspect_err(|e| tracing::debug!("profile symbols: {e}")).ok().map(Arc::new);
        self.binaries.insert(mapping.dev_ino, binary.clone());
        binary
    }

    /// Frames at `addr` of `mapping`: `caller` for a return address (the
    /// call is the byte before it).
    pub fn user(&mut self, pid: u32, mapping: &Mapping, addr: u64, caller: bool) -> UserFrame {
        let Some(binary) = self.binary(pid, mapping) else {
            return UserFrame { frames: Vec::new(), build_id: String::new() };
        };
        let at = if caller { addr.saturating_sub(1) } else { addr };
        let frames =
            binary.link_address(at - mapping.start + mapping.offset).map(|a| binary.frames(a)).unwrap_or_default();
        UserFrame { frames, build_id: binary.build_id.clone() }
    }

    /// Reads the kernel's symbols (once).
    pub fn load_kernel(&mut self) {
        if !self.kernel_read {
            self.kernel_read = true;
            self.kernel = Kallsyms::load().inspect_err(|e| tracing::warn!("profiles: {e}")).ok();
        }
    }

    /// The kernel function holding `addr`.
    pub fn kernel(&mut self, addr: u64) -> Option<&str> {
        self.load_kernel();
        self.kernel.as_ref()?.symbol(addr).map(|(name, _)| name)
    }
}
