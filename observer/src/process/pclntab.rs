//! Go's function table (`.gopclntab`): function name → entry address, and
//! text offset → function, file, line and inlining. The runtime needs it for
//! stack traces, so it survives `-ldflags=-s -w`; it lists functions only,
//! never data such as `runtime.work`.
//!
//! Layout of Go 1.18 and later (`runtime/symtab.go`, `pcHeader`): a header
//! of 8 bytes and 8 pointer-sized words, then at `pclnOffset` `nfunc` pairs
//! of (entry offset from `textStart`, offset of the `_func`), each `_func`
//! starting with its entry offset and its name's offset in the name table.
//! A `_func` names its pc-value tables (offsets into `pctab`): file number
//! (`pcfile`, per compilation unit, through `cutab` to `filetab`), line
//! (`pcln`) and `npcdata` more, then `nfuncdata` offsets from
//! `moduledata.gofunc` (`go:func.*`), `^0` for none.

/// Go 1.18–1.19 and Go 1.20+ (same layout for what is read here).
const MAGIC_118: u32 = 0xffff_fff0;
const MAGIC_120: u32 = 0xffff_fff1;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PclntabError {
    #[error("unsupported .gopclntab format (magic {0:#x}; Go 1.18 or later is read)")]
    Magic(u32),
    #[error("unsupported .gopclntab pointer size {0}")]
    PointerSize(u8),
    #[error(".gopclntab is truncated")]
    Truncated,
}

/// `PCDATA_InlTreeIndex`: the pc-value table of inlining tree indexes.
const PCDATA_INL_TREE_INDEX: usize = 2;
/// `FUNCDATA_InlTree`: the function's inlining tree.
pub const FUNCDATA_INL_TREE: usize = 3;
/// Functions nested deeper than this are taken for a corrupt tree (a cycle).
const INLINE_DEPTH_MAX: usize = 1000;

/// The parsed header: enough to look functions up by name or address.
#[derive(Debug)]
pub struct Pclntab<'d> {
    data: &'d [u8],
    ptr: usize,
    /// Go 1.20 and later: `_func.startLine` and the shorter `inlinedCall`.
    go120: bool,
    /// `pcquantum`: the unit of pc deltas in pc-value tables (1 on amd64).
    quantum: u32,
    nfunc: usize,
    funcname: usize,
    cutab: usize,
    filetab: usize,
    pctab: usize,
    functab: usize,
}

/// One `_func`: where it is in the table and its entry offset from `textStart`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Func {
    at: usize,
    pub entry: u32,
}

/// A source position at a text offset: function name offset, file, line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position<'d> {
    /// Before printing, as the runtime's `funcNameForPrint` does it.
    pub function: &'d str,
    /// `None` where the tables have no file (the runtime prints `?`).
    pub file: Option<&'d str>,
    /// 0 where the tables have no line.
    pub line: u32,
    pub inlined: bool,
}

impl<'d> Pclntab<'d> {
    pub fn parse(data: &'d [u8]) -> Result<Self, PclntabError> {
        let magic = u32_at(data, 0).ok_or(PclntabError::Truncated)?;
        if magic != MAGIC_118 && magic != MAGIC_120 {
            return Err(PclntabError::Magic(magic));
        }
        let ptr = *data.get(7).ok_or(PclntabError::Truncated)?;
        if ptr != 8 && ptr != 4 {
            return Err(PclntabError::PointerSize(ptr));
        }
        let ptr = usize::from(ptr);
        let quantum = u32::from(data[6]);
        let word = |i: usize| word_at(data, 8 + i * ptr, ptr).ok_or(PclntabError::Truncated);
        Ok(Self {
            data,
            ptr,
            go120: magic == MAGIC_120,
            quantum,
            nfunc: word(0)?,
            funcname: word(3)?,
            cutab: word(4)?,
            filetab: word(5)?,
            pctab: word(6)?,
            functab: word(7)?,
        })
    }

    /// Offset inside the table of the `textStart` word, which holds the
    /// address function entries are relative to (relocated in PIE binaries).
    pub fn text_start_offset(&self) -> usize {
        8 + 2 * self.ptr
    }

    /// The `textStart` word as stored in the file.
    pub fn text_start(&self) -> Option<u64> {
        word_at(self.data, self.text_start_offset(), self.ptr).and_then(|w| u64::try_from(w).ok())
    }

    /// Offset inside the table of the function name table.
    pub fn funcname_offset(&self) -> usize {
        self.funcname
    }

    /// Entry and end of the function `name` (where the next one starts), as
    /// offsets from `textStart`.
    pub fn func_range(&self, name: &str) -> Option<(u64, u64)> {
        (0..self.nfunc).find_map(|i| {
            let pair = self.functab.checked_add(i.checked_mul(8)?)?;
            let func_off = usize::try_from(u32_at(self.data, pair + 4)?).ok()?;
            let func = self.functab.checked_add(func_off)?;
            let entry = u32_at(self.data, func)?;
            let name_off = usize::try_from(u32_at(self.data, func + 4)?).ok()?;
            let start = self.funcname.checked_add(name_off)?;
            let rest = self.data.get(start..)?;
            let end = rest.iter().position(|&b| b == 0)?;
            if &rest[..end] != name.as_bytes() {
                return None;
            }
            // The table ends with one more pair holding the end of the text.
            let next = u32_at(self.data, pair + 8)?;
            (next > entry).then_some((u64::from(entry), u64::from(next)))
        })
    }
}

impl<'d> Pclntab<'d> {
    /// Entry offset of the `i`th function (`nfunc` for the end of the text).
    fn entry_at(&self, i: usize) -> Option<u32> {
        u32_at(self.data, self.functab.checked_add(i.checked_mul(8)?)?)
    }

    /// Offsets from `textStart` of the first function and of the text's end.
    pub fn text_offsets(&self) -> Option<(u32, u32)> {
        Some((self.entry_at(0)?, self.entry_at(self.nfunc)?))
    }

    /// The function whose code holds text offset `pc`: a binary search of
    /// the entries, which are sorted.
    pub fn find_func(&self, pc: u32) -> Option<Func> {
        let (first, end) = self.text_offsets()?;
        if pc < first || pc >= end {
            return None;
        }
        // Invariant: entry(lo) <= pc < entry(hi).
        let (mut lo, mut hi) = (0, self.nfunc);
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if self.entry_at(mid)? <= pc {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        let pair = self.functab.checked_add(lo * 8)?;
        let at = self.functab.checked_add(usize::try_from(u32_at(self.data, pair + 4)?).ok()?)?;
        let entry = u32_at(self.data, at)?;
        // The pair and the `_func` must agree, or the table is corrupt.
        (entry == self.entry_at(lo)?).then_some(Func { at, entry })
    }

    fn field(&self, func: Func, offset: usize) -> Option<u32> {
        u32_at(self.data, func.at.checked_add(offset)?)
    }

    /// The NUL-terminated string at `offset` of the name table.
    fn name(&self, offset: u32) -> Option<&'d str> {
        cstr(self.data, self.funcname.checked_add(usize::try_from(offset).ok()?)?)
    }

    /// Bytes of `_func` before its pcdata offsets.
    fn func_header_len(&self) -> usize {
        if self.go120 { 44 } else { 40 }
    }

    fn npcdata(&self, func: Func) -> Option<usize> {
        usize::try_from(self.field(func, 28)?).ok()
    }

    /// Offset from `moduledata.gofunc` of the function's funcdata `index`.
    pub fn funcdata(&self, func: Func, index: usize) -> Option<u32> {
        let nfuncdata = usize::from(*self.data.get(func.at.checked_add(self.func_header_len() - 1)?)?);
        if index >= nfuncdata {
            return None;
        }
        let at = self.func_header_len().checked_add(self.npcdata(func)?.checked_add(index)?.checked_mul(4)?)?;
        self.field(func, at).filter(|&off| off != u32::MAX)
    }

    /// The value of the pc-value table at `table` (an offset into `pctab`)
    /// at text offset `pc`, -1 where the table has none (`runtime.pcvalue`).
    /// Each step is a zig-zag varint value delta, then a varint pc delta in
    /// units of `pcquantum`; a zero value delta after the first step ends it.
    fn pcvalue(&self, func: Func, table: u32, pc: u32) -> Option<i32> {
        if table == 0 {
            return Some(-1);
        }
        let mut p = self.pctab.checked_add(usize::try_from(table).ok()?)?;
        let (mut at, mut value) = (func.entry, -1i32);
        loop {
            let (delta, n) = uvarint(self.data, p)?;
            if delta == 0 && at != func.entry {
                return None;
            }
            p += n;
            // Zig-zag: the low bit is the sign.
            value = value.wrapping_add((-((delta & 1) as i32)) ^ ((delta >> 1) as i32));
            let (pc_delta, n) = uvarint(self.data, p)?;
            p += n;
            at = at.checked_add(pc_delta.checked_mul(self.quantum)?)?;
            if pc < at {
                return Some(value);
            }
        }
    }

    /// The value of pcdata table `index` at `pc`, -1 where there is none.
    fn pcdata(&self, func: Func, index: usize, pc: u32) -> Option<i32> {
        if index >= self.npcdata(func)? {
            return Some(-1);
        }
        let table = self.field(func, self.func_header_len().checked_add(index * 4)?)?;
        self.pcvalue(func, table, pc)
    }

    /// File and line at `pc` (`runtime.funcline1`): neither where either
    /// is missing, as the runtime reports it (`?`, 0).
    fn file_line(&self, func: Func, pc: u32) -> (Option<&'d str>, u32) {
        let found = (|| {
            let line = u32::try_from(self.pcvalue(func, self.field(func, 24)?, pc)?).ok()?;
            let fileno = u32::try_from(self.pcvalue(func, self.field(func, 20)?, pc)?).ok()?;
            let cu = self.field(func, 32)?;
            let entry = usize::try_from(cu.checked_add(fileno)?).ok()?.checked_mul(4)?;
            let offset = u32_at(self.data, self.cutab.checked_add(entry)?)?;
            if offset == u32::MAX {
                return None;
            }
            Some((cstr(self.data, self.filetab.checked_add(usize::try_from(offset).ok()?)?)?, line))
        })();
        match found {
            Some((file, line)) => (Some(file), line),
            None => (None, 0),
        }
    }

    /// The source positions at text offset `pc` of function `func`,
    /// innermost first: one per function inlined there, then `func`'s own.
    /// `inline_tree` is the function's `FUNCDATA_InlTree` (`None` when it
    /// has none). Each caller's line is the one its pc-value tables give at
    /// the call site (`parentPc`), as `runtime.CallersFrames` reports it.
    pub fn positions(&self, func: Func, pc: u32, inline_tree: Option<&'d [u8]>) -> Vec<Position<'d>> {
        let mut positions = Vec::new();
        let Some(name) = self.name(self.field(func, 4).unwrap_or(u32::MAX)) else { return positions };
        let mut pc = pc;
        for _ in 0..INLINE_DEPTH_MAX {
            let (file, line) = self.file_line(func, pc);
            let call = inline_tree.and_then(|tree| {
                let index = usize::try_from(self.pcdata(func, PCDATA_INL_TREE_INDEX, pc)?).ok()?;
                self.inlined_call(tree, index)
            });
            let Some((name_offset, parent_pc)) = call else {
                positions.push(Position { function: name, file, line, inlined: false });
                return positions;
            };
            let Some(function) = self.name(name_offset) else { return positions };
            positions.push(Position { function, file, line, inlined: true });
            let Some(parent) = func.entry.checked_add(parent_pc) else { return positions };
            pc = parent;
        }
        positions
    }

    /// Name offset and call site (offset from entry) of inlining tree node
    /// `index` (`runtime.inlinedCall`; Go 1.18–1.19 had a longer one).
    fn inlined_call(&self, tree: &[u8], index: usize) -> Option<(u32, u32)> {
        let (size, name, parent_pc) = if self.go120 { (16, 4, 8) } else { (20, 12, 16) };
        let at = index.checked_mul(size)?;
        Some((u32_at(tree, at + name)?, u32_at(tree, at + parent_pc)?))
    }
}

/// The function name as the runtime prints it: a generic function's shape
/// arguments as `[...]` (`runtime.funcNameForPrint`).
pub fn name_for_print(name: &str) -> std::borrow::Cow<'_, str> {
    match (name.find('['), name.rfind(']')) {
        (Some(open), Some(close)) if open < close => format!("{}[...]{}", &name[..open], &name[close + 1..]).into(),
        _ => name.into(),
    }
}

/// A little-endian base-128 varint of at most 32 bits, and its length.
fn uvarint(data: &[u8], at: usize) -> Option<(u32, usize)> {
    let mut value = 0u32;
    for (i, &b) in data.get(at..)?.iter().take(5).enumerate() {
        value |= u32::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

fn cstr(data: &[u8], at: usize) -> Option<&str> {
    let rest = data.get(at..)?;
    std::str::from_utf8(&rest[..rest.iter().position(|&b| b == 0)?]).ok()
}

fn u32_at(data: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(data.get(at..at.checked_add(4)?)?.try_into().ok()?))
}

fn word_at(data: &[u8], at: usize, size: usize) -> Option<usize> {
    let bytes = data.get(at..at.checked_add(size)?)?;
    let mut le = [0u8; 8];
    le[..size].copy_from_slice(bytes);
    usize::try_from(u64::from_le_bytes(le)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A table with two functions, `a` at +0x10 and `main.main` at +0x40.
    fn table() -> Vec<u8> {
        let mut t = Vec::new();
        t.extend_from_slice(&MAGIC_120.to_le_bytes());
        t.extend_from_slice(&[0, 0, 1, 8]);
        let funcname = 72;
        let names = b"a\0main.main\0";
        let functab = funcname + names.len();
        for w in [2, 0, 0x40_1000, funcname, 0, 0, 0, functab] {
            t.extend_from_slice(&(w as u64).to_le_bytes());
        }
        t.extend_from_slice(names);
        // Pairs (entry, func offset), then the end entry, then the _funcs.
        for (entry, func) in [(0x10u32, 24u32), (0x40, 32), (0x80, 0)] {
            t.extend_from_slice(&entry.to_le_bytes());
            t.extend_from_slice(&func.to_le_bytes());
        }
        for (entry, name) in [(0x10u32, 0u32), (0x40, 2)] {
            t.extend_from_slice(&entry.to_le_bytes());
            t.extend_from_slice(&name.to_le_bytes());
        }
        t
    }

    #[test]
    fn finds_functions_by_name() {
        let data = table();
        let tab = Pclntab::parse(&data).unwrap();
        assert_eq!(tab.text_start(), Some(0x40_1000));
        assert_eq!(tab.func_range("main"), None);
        assert_eq!(tab.func_range("a"), Some((0x10, 0x40)));
        assert_eq!(tab.func_range("main.main"), Some((0x40, 0x80)));
    }

    const OUTER: &str = "main.outer";
    const INNER: &str = "main.inner";

    /// One function, `main.outer` at +0..+0x20 in file `a.go`: line 10,
    /// then 310 from +0x10; `main.inner` is inlined at +0x8..+0x10, called
    /// from +0x12 (line 310). Returns the table and the inlining tree.
    fn positions_table() -> (Vec<u8>, Vec<u8>) {
        let names = format!("{OUTER}\0{INNER}\0");
        let funcname = 72;
        let cutab = funcname + names.len();
        let filetab = cutab + 4;
        let files = b"a.go\0";
        let pctab = filetab + files.len();
        // Offset 0 of pctab means "no table": a pad byte first.
        let pcfile = [0u8, 2, 0x20, 0];
        // -1 → 10 (zig-zag 22) for 0x10, +300 (zig-zag 600, two bytes) for 0x10.
        let pcln = [22u8, 0x10, 0xd8, 0x04, 0x10, 0];
        // -1 for 8, +1 → 0 for 8, -1 (zig-zag 1) → -1 for 0x10.
        let inl = [0u8, 8, 2, 8, 1, 0x10, 0];
        let (file_at, line_at) = (1u32, pcfile.len() as u32);
        let inl_at = line_at + pcln.len() as u32;
        let functab = pctab + pcfile.len() + pcln.len() + inl.len();
        let mut t = Vec::new();
        t.extend_from_slice(&MAGIC_120.to_le_bytes());
        t.extend_from_slice(&[0, 0, 1, 8]);
        for w in [1, 1, 0x40_1000, funcname, cutab, filetab, pctab, functab] {
            t.extend_from_slice(&(w as u64).to_le_bytes());
        }
        t.extend_from_slice(names.as_bytes());
        t.extend_from_slice(&0u32.to_le_bytes());
        t.extend_from_slice(files);
        t.extend_from_slice(&pcfile);
        t.extend_from_slice(&pcln);
        t.extend_from_slice(&inl);
        assert_eq!(t.len(), functab);
        for (entry, func) in [(0u32, 16u32), (0x20, 0)] {
            t.extend_from_slice(&entry.to_le_bytes());
            t.extend_from_slice(&func.to_le_bytes());
        }
        // entryOff, nameOff, args, deferreturn, pcsp, pcfile, pcln, npcdata, cuOffset, startLine.
        for w in [0, 0, 0, 0, 0, file_at, line_at, 3, 0, 9] {
            t.extend_from_slice(&w.to_le_bytes());
        }
        t.extend_from_slice(&[0, 0, 0, 4]); // funcID, flag, pad, nfuncdata
        for w in [0, 0, inl_at, u32::MAX, u32::MAX, u32::MAX, 0] {
            t.extend_from_slice(&w.to_le_bytes());
        }
        // funcID, pad, nameOff, parentPc, startLine.
        let mut tree = vec![0u8; 4];
        for w in [OUTER.len() as u32 + 1, 0x12, 5] {
            tree.extend_from_slice(&w.to_le_bytes());
        }
        (t, tree)
    }

    fn position(function: &str, line: u32, inlined: bool) -> Position<'_> {
        Position { function, file: Some("a.go"), line, inlined }
    }

    #[test]
    fn finds_positions_and_inlined_calls() {
        let (data, tree) = positions_table();
        let tab = Pclntab::parse(&data).unwrap();
        assert_eq!(tab.text_offsets(), Some((0, 0x20)));
        assert_eq!(tab.find_func(0x20), None);
        let func = tab.find_func(0x1f).unwrap();
        assert_eq!(tab.find_func(0), Some(func));
        assert_eq!(tab.funcdata(func, FUNCDATA_INL_TREE), Some(0));
        assert_eq!(tab.funcdata(func, 0), None);
        assert_eq!(tab.positions(func, 0x7, Some(&tree)), [position(OUTER, 10, false)]);
        assert_eq!(tab.positions(func, 0x8, Some(&tree)), [position(INNER, 10, true), position(OUTER, 310, false)]);
        assert_eq!(tab.positions(func, 0x8, None), [position(OUTER, 10, false)]);
        assert_eq!(tab.positions(func, 0x10, Some(&tree)), [position(OUTER, 310, false)]);
        assert_eq!(tab.positions(func, 0x1f, Some(&tree)), [position(OUTER, 310, false)]);
    }

    #[test]
    fn corrupt_tables_never_panic() {
        let (data, tree) = positions_table();
        for len in 0..data.len() {
            let Ok(tab) = Pclntab::parse(&data[..len]) else { continue };
            for pc in 0..0x22 {
                if let Some(func) = tab.find_func(pc) {
                    tab.positions(func, pc, Some(&tree[..len.min(tree.len())]));
                }
            }
        }
        for at in 0..data.len() {
            for garbage in [0x00, 0x7f, 0x80, 0xff] {
                let mut bad = data.clone();
                bad[at] = garbage;
                let Ok(tab) = Pclntab::parse(&bad) else { continue };
                for pc in [0, 8, 0x10, 0x1f] {
                    if let Some(func) = tab.find_func(pc) {
                        assert!(tab.positions(func, pc, Some(&tree)).len() <= INLINE_DEPTH_MAX);
                    }
                }
            }
        }
    }

    #[test]
    fn generic_shapes_print_as_dots() {
        assert_eq!(name_for_print("main.generic[go.shape.int]"), "main.generic[...]");
        assert_eq!(name_for_print("main.(*T[go.shape.int]).m"), "main.(*T[...]).m");
        assert_eq!(name_for_print("main.main"), "main.main");
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        assert_eq!(Pclntab::parse(&[]).unwrap_err(), PclntabError::Truncated);
        assert_eq!(Pclntab::parse(&0xffff_fffbu32.to_le_bytes()).unwrap_err(), PclntabError::Magic(0xffff_fffb));
        let mut data = table();
        data[7] = 3;
        assert_eq!(Pclntab::parse(&data).unwrap_err(), PclntabError::PointerSize(3));
        let data = table();
        let tab = Pclntab::parse(&data[..100]).unwrap();
        assert_eq!(tab.func_range("main.main"), None);
    }
}
