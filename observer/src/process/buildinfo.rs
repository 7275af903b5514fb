//! Go build info (`.go.buildinfo`): the Go version and main module of a
//! binary. Its presence is how a process is recognised as Go, not its name.
//!
//! Two formats exist: Go 1.18+ writes the strings inline after the 32-byte
//! header (flag bit 2); older releases write two pointers to Go string
//! headers (`runtime.buildVersion`, `runtime.modinfo`) elsewhere in the image.

/// `"\xff Go buildinf:"`, at a 16-byte aligned offset.
const MAGIC: &[u8; 14] = b"\xff Go buildinf:";
const HEADER_LEN: usize = 32;
const ALIGN: usize = 16;
const FLAG_BIG_ENDIAN: u8 = 1;
const FLAG_INLINE: u8 = 2;
/// Framing around the module info (cmd/go's infoStart/infoEnd), 16 bytes each.
const MODINFO_FRAME: usize = 16;
/// Longest string we accept from a binary; build info is a few KiB.
const MAX_STRING: u64 = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildInfo {
    /// As the binary says, e.g. `go1.26.8`.
    pub go_version: String,
    /// The main module's path (`mod` line), when built in module mode.
    pub main_module: Option<String>,
    /// The main package's import path (`path` line).
    pub path: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BuildInfoError {
    #[error("no build info magic in .go.buildinfo")]
    NoMagic,
    #[error("build info has pointer size {0}")]
    PointerSize(u8),
    #[error("build info is truncated")]
    Truncated,
    #[error("build info points at {0:#x}, outside the image")]
    BadPointer(u64),
    #[error("build info has an empty Go version")]
    NoVersion,
}

/// Parses the contents of `.go.buildinfo`. `read_at(address, len)` reads the
/// image at a virtual address (only the pre-1.18 pointer format needs it).
pub fn parse(section: &[u8], read_at: impl Fn(u64, u64) -> Option<Vec<u8>>) -> Result<BuildInfo, BuildInfoError> {
    let blob = find_header(section).ok_or(BuildInfoError::NoMagic)?;
    let ptr_size = blob[14];
    let flags = blob[15];
    let (version, modinfo) = if flags & FLAG_INLINE != 0 {
        let (version, rest) = varint_string(&blob[HEADER_LEN..]).ok_or(BuildInfoError::Truncated)?;
        let (modinfo, _) = varint_string(rest).ok_or(BuildInfoError::Truncated)?;
        (version.to_vec(), modinfo.to_vec())
    } else {
        if ptr_size != 4 && ptr_size != 8 {
            return Err(BuildInfoError::PointerSize(ptr_size));
        }
        let big = flags & FLAG_BIG_ENDIAN != 0;
        let size = usize::from(ptr_size);
        let version_ptr = word(&blob[16..], size, big).ok_or(BuildInfoError::Truncated)?;
        let modinfo_ptr = word(&blob[16 + size..], size, big).ok_or(BuildInfoError::Truncated)?;
        let version = go_string(&read_at, version_ptr, size, big)?;
        let modinfo = go_string(&read_at, modinfo_ptr, size, big)?;
        (version, modinfo)
    };
    if version.is_empty() {
        return Err(BuildInfoError::NoVersion);
    }
    let modinfo = unframe(&modinfo);
    let field = |key: &str| {
        modinfo.lines().find_map(|line| {
            let mut parts = line.split('\t');
            (parts.next() == Some(key)).then(|| parts.next().map(str::to_string)).flatten()
        })
    };
    Ok(BuildInfo {
        go_version: String::from_utf8_lossy(&version).into_owned(),
        main_module: field("mod"),
        path: field("path"),
    })
}

/// The header: the magic at a 16-byte aligned offset, with 32 bytes to read.
fn find_header(section: &[u8]) -> Option<&[u8]> {
    (0..section.len())
        .step_by(ALIGN)
        .map(|at| &section[at..])
        .find(|rest| rest.len() >= HEADER_LEN && rest.starts_with(MAGIC))
}

/// A uvarint length followed by that many bytes.
fn varint_string(data: &[u8]) -> Option<(&[u8], &[u8])> {
    let mut len: u64 = 0;
    for (i, &b) in data.iter().enumerate().take(10) {
        len |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            let start = i + 1;
            let end = start.checked_add(usize::try_from(len).ok()?)?;
            return Some((data.get(start..end)?, data.get(end..)?));
        }
    }
    None
}

fn word(data: &[u8], size: usize, big: bool) -> Option<u64> {
    let bytes = data.get(..size)?;
    let fold = |acc: u64, b: &u8| (acc << 8) | u64::from(*b);
    Some(if big { bytes.iter().fold(0, fold) } else { bytes.iter().rev().fold(0, fold) })
}

/// Reads a Go string header (data pointer, length) at `at`, then its bytes.
fn go_string(
    read_at: &impl Fn(u64, u64) -> Option<Vec<u8>>,
    at: u64,
    size: usize,
    big: bool,
) -> Result<Vec<u8>, BuildInfoError> {
    let header = read_at(at, 2 * size as u64).ok_or(BuildInfoError::BadPointer(at))?;
    let data = word(&header, size, big).ok_or(BuildInfoError::Truncated)?;
    let len = word(&header[size..], size, big).ok_or(BuildInfoError::Truncated)?;
    if len == 0 {
        return Ok(Vec::new());
    }
    if len > MAX_STRING {
        return Err(BuildInfoError::Truncated);
    }
    read_at(data, len).ok_or(BuildInfoError::BadPointer(data))
}

/// Strips the sentinels around module info; unframed info is not trusted.
fn unframe(modinfo: &[u8]) -> String {
    let n = modinfo.len();
    if n > 2 * MODINFO_FRAME && modinfo[n - MODINFO_FRAME - 1] == b'\n' {
        String::from_utf8_lossy(&modinfo[MODINFO_FRAME..n - MODINFO_FRAME]).into_owned()
    } else {
        String::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MODINFO: &str =
        "path\texample.invalid/app/cmd/app\nmod\texample.invalid/app\t(devel)\t\nbuild\t-compiler=gc\n";

    fn framed(text: &str) -> Vec<u8> {
        let mut v = b"0w\xaf\x0c\x92t\x08\x02A\xe1\xc1\x07\xe6\xd6\x18\xe6".to_vec();
        v.extend_from_slice(text.as_bytes());
        v.extend_from_slice(b"\xf92C1\x86\x18 r\x00\x82B\x10A\x16\xd8\xf2");
        v
    }

    fn varint(mut n: usize, out: &mut Vec<u8>) {
        while n >= 0x80 {
            out.push((n as u8) | 0x80);
            n >>= 7;
        }
        out.push(n as u8);
    }

    fn header(ptr_size: u8, flags: u8) -> Vec<u8> {
        let mut v = MAGIC.to_vec();
        v.extend_from_slice(&[ptr_size, flags]);
        v.resize(HEADER_LEN, 0);
        v
    }

    fn no_image(_: u64, _: u64) -> Option<Vec<u8>> {
        None
    }

    #[test]
    fn inline_format_go_1_18_and_later() {
        let modinfo = framed(MODINFO);
        let mut section = header(8, FLAG_INLINE);
        varint(8, &mut section);
        section.extend_from_slice(b"go1.26.8");
        varint(modinfo.len(), &mut section);
        section.extend_from_slice(&modinfo);
        let info = parse(&section, no_image).unwrap();
        assert_eq!(info.go_version, "go1.26.8");
        assert_eq!(info.main_module.as_deref(), Some("example.invalid/app"));
        assert_eq!(info.path.as_deref(), Some("example.invalid/app/cmd/app"));
    }

    #[test]
    fn long_module_info_has_a_multi_byte_length() {
        let text = format!("{MODINFO}{}", "dep\texample.invalid/dep\tv1.0.0\th1:x=\n".repeat(20));
        let modinfo = framed(&text);
        assert!(modinfo.len() >= 0x80);
        let mut section = header(8, FLAG_INLINE);
        varint(7, &mut section);
        section.extend_from_slice(b"go1.22.");
        varint(modinfo.len(), &mut section);
        section.extend_from_slice(&modinfo);
        assert_eq!(parse(&section, no_image).unwrap().main_module.as_deref(), Some("example.invalid/app"));
    }

    /// Before Go 1.18: two pointers to string headers elsewhere in the image.
    fn pointer_format(big: bool) -> (Vec<u8>, impl Fn(u64, u64) -> Option<Vec<u8>>) {
        let put = |v: u64| if big { v.to_be_bytes() } else { v.to_le_bytes() };
        let mut section = header(8, if big { FLAG_BIG_ENDIAN } else { 0 });
        section[16..24].copy_from_slice(&put(0x1000));
        section[24..32].copy_from_slice(&put(0x1010));
        let modinfo = framed(MODINFO);
        let mut image = vec![0u8; 0x200];
        image[0x00..0x08].copy_from_slice(&put(0x1100));
        image[0x08..0x10].copy_from_slice(&put(7));
        image[0x10..0x18].copy_from_slice(&put(0x1120));
        image[0x18..0x20].copy_from_slice(&put(modinfo.len() as u64));
        image[0x100..0x107].copy_from_slice(b"go1.16.");
        image[0x120..0x120 + modinfo.len()].copy_from_slice(&modinfo);
        let read = move |addr: u64, len: u64| {
            let start = usize::try_from(addr.checked_sub(0x1000)?).ok()?;
            image.get(start..start + usize::try_from(len).ok()?).map(<[u8]>::to_vec)
        };
        (section, read)
    }

    #[test]
    fn pointer_format_before_go_1_18() {
        for big in [false, true] {
            let (section, read) = pointer_format(big);
            let info = parse(&section, read).unwrap();
            assert_eq!(info.go_version, "go1.16.", "big endian: {big}");
            assert_eq!(info.main_module.as_deref(), Some("example.invalid/app"));
        }
    }

    #[test]
    fn header_is_found_at_an_aligned_offset_only() {
        let mut section = vec![0u8; 5];
        section.extend_from_slice(&header(8, FLAG_INLINE));
        assert_eq!(parse(&section, no_image), Err(BuildInfoError::NoMagic));
        let mut section = vec![0u8; 16];
        section.extend_from_slice(&header(8, FLAG_INLINE));
        varint(6, &mut section);
        section.extend_from_slice(b"go1.23");
        varint(0, &mut section);
        let info = parse(&section, no_image).unwrap();
        assert_eq!(info.go_version, "go1.23");
        assert_eq!(info.main_module, None, "no module info (GOPATH mode)");
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        assert_eq!(parse(b"", no_image), Err(BuildInfoError::NoMagic));
        let mut section = header(8, FLAG_INLINE);
        section.push(0x7f);
        assert_eq!(parse(&section, no_image), Err(BuildInfoError::Truncated));
        let mut section = header(8, FLAG_INLINE);
        section.extend_from_slice(&[0, 0]);
        assert_eq!(parse(&section, no_image), Err(BuildInfoError::NoVersion));
        assert_eq!(parse(&header(3, 0), no_image), Err(BuildInfoError::PointerSize(3)));
        let mut section = header(8, 0);
        section[16] = 0x40;
        assert_eq!(parse(&section, no_image), Err(BuildInfoError::BadPointer(0x40)));
    }

    #[test]
    fn unframed_module_info_is_ignored() {
        assert_eq!(unframe(MODINFO.as_bytes()), "");
        assert_eq!(unframe(&framed(MODINFO)), MODINFO);
    }
}
