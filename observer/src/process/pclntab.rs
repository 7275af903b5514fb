//! Go's function table (`.gopclntab`): function name → entry address. The
//! runtime needs it for stack traces, so it survives `-ldflags=-s -w`; it
//! lists functions only, never data such as `runtime.work`.
//!
//! Layout of Go 1.18 and later (`runtime/symtab.go`, `pcHeader`): a header
//! of 8 bytes and 8 pointer-sized words, then at `pclnOffset` `nfunc` pairs
//! of (entry offset from `textStart`, offset of the `_func`), each `_func`
//! starting with its entry offset and its name's offset in the name table.

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

/// The parsed header: enough to look functions up by name.
#[derive(Debug)]
pub struct Pclntab<'d> {
    data: &'d [u8],
    ptr: usize,
    nfunc: usize,
    funcname: usize,
    functab: usize,
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
        let word = |i: usize| word_at(data, 8 + i * ptr, ptr).ok_or(PclntabError::Truncated);
        let nfunc = word(0)?;
        let funcname = word(3)?;
        let functab = word(7)?;
        Ok(Self { data, ptr, nfunc, funcname, functab })
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
