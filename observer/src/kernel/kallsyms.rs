//! Kernel addresses → `function+0xoff`, from `/proc/kallsyms` (read once, on
//! first use; addresses are all zero there without CAP_SYSLOG, and then
//! nothing is symbolized).

use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum KallsymsError {
    #[error("cannot read {path}: {error}")]
    Read { path: String, error: std::io::Error },
    #[error("{0} shows no addresses (kptr_restrict, or not privileged): drop locations stay numeric")]
    Hidden(String),
}

pub const KALLSYMS: &str = "/proc/kallsyms";

/// Text symbols sorted by address; names in one arena string.
#[derive(Debug, Default)]
pub struct Kallsyms {
    /// (address, start of the name in `names`, its length).
    symbols: Vec<(u64, u32, u16)>,
    names: String,
}

impl Kallsyms {
    pub fn load() -> Result<Self, KallsymsError> {
        Self::from_file(Path::new(KALLSYMS))
    }

    pub fn from_file(path: &Path) -> Result<Self, KallsymsError> {
        let text = std::fs::read_to_string(path)
            .map_err(|error| KallsymsError::Read { path: path.display().to_string(), error })?;
        let syms = Self::parse(&text);
        if syms.symbols.is_empty() {
            return Err(KallsymsError::Hidden(path.display().to_string()));
        }
        Ok(syms)
    }

    /// Parses `ffffffff81000000 T _stext [module]` lines; keeps text symbols.
    pub fn parse(text: &str) -> Self {
        let mut syms = Self::default();
        for line in text.lines() {
            let mut f = line.split_whitespace();
            let (Some(addr), Some(kind), Some(name)) = (f.next(), f.next(), f.next()) else {
                continue;
            };
            if !matches!(kind, "t" | "T") {
                continue;
            }
            let Ok(addr) = u64::from_str_radix(addr, 16) else {
                continue;
            };
            let (Ok(start), Ok(len)) = (u32::try_from(syms.names.len()), u16::try_from(name.len())) else {
                continue;
            };
            if addr == 0 {
                continue;
            }
            syms.names.push_str(name);
            syms.symbols.push((addr, start, len));
        }
        syms.symbols.sort_unstable_by_key(|s| s.0);
        syms
    }

    /// `name+0xoff` of the text symbol at or below `addr`.
    pub fn resolve(&self, addr: u64) -> Option<String> {
        let (name, offset) = self.symbol(addr)?;
        Some(format!("{name}+{offset:#x}"))
    }

    /// The function holding `addr` and the offset into it.
    pub fn symbol(&self, addr: u64) -> Option<(&str, u64)> {
        let i = self.symbols.partition_point(|s| s.0 <= addr).checked_sub(1)?;
        let (start, off, len) = self.symbols[i];
        let name = self.names.get(off as usize..off as usize + len as usize)?;
        Some((name, addr - start))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_to_the_symbol_below() {
        let k = Kallsyms::parse(
            "ffffffff81000100 T b_func\nffffffff81000000 t a_func\nffffffff81000050 D data\n\
             0000000000000000 T hidden\nffffffffc0000000 t modfn\t[nf_tables]\n",
        );
        assert_eq!(k.resolve(0xffffffff81000010).as_deref(), Some("a_func+0x10"));
        assert_eq!(k.resolve(0xffffffff81000100).as_deref(), Some("b_func+0x0"));
        assert_eq!(k.resolve(0xffffffffc0000004).as_deref(), Some("modfn+0x4"));
        assert_eq!(k.resolve(0x1000), None);
    }

    #[test]
    fn hidden_addresses_are_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kallsyms");
        std::fs::write(&path, "0000000000000000 T a\n").unwrap();
        assert!(matches!(Kallsyms::from_file(&path), Err(KallsymsError::Hidden(_))));
    }
}
