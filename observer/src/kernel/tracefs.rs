//! tracefs: where it is (mounting it when we may) and the `format` files that
//! describe each tracepoint's record, which differ between kernels.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum TracefsError {
    #[error(
        "tracefs is not mounted and mounting it at {path} failed ({errno}); mount it with `mount -t tracefs nodev {path}`"
    )]
    NotMounted { path: &'static str, errno: nix::errno::Errno },
    #[error("tracepoint {category}:{name} does not exist on this kernel")]
    NoTracepoint { category: String, name: String },
    #[error("cannot read {path}: {error}")]
    Read { path: String, error: std::io::Error },
    #[error("cannot parse {path}: line `{line}`")]
    Parse { path: String, line: String },
}

const TRACEFS: &str = "/sys/kernel/tracing";
const DEBUGFS_TRACING: &str = "/sys/kernel/debug/tracing";

/// Finds tracefs, mounting it at /sys/kernel/tracing when it is not mounted
/// (a fresh machine often has it unmounted).
pub fn ensure_mounted() -> Result<PathBuf, TracefsError> {
    if let Some(path) = find() {
        return Ok(path);
    }
    nix::mount::mount(Some("nodev"), TRACEFS, Some("tracefs"), nix::mount::MsFlags::empty(), None::<&str>)
        .map_err(|errno| TracefsError::NotMounted { path: TRACEFS, errno })?;
    tracing::info!("mounted tracefs at {TRACEFS}");
    find().ok_or(TracefsError::NotMounted { path: TRACEFS, errno: nix::errno::Errno::ENOENT })
}

/// The mounted tracefs, if any.
pub fn find() -> Option<PathBuf> {
    [TRACEFS, DEBUGFS_TRACING].iter().map(PathBuf::from).find(|p| p.join("events").is_dir())
}

/// Whether `category:name` exists under the given tracefs.
pub fn tracepoint_exists(tracefs: &Path, category: &str, name: &str) -> bool {
    tracefs.join("events").join(category).join(name).join("format").is_file()
}

/// One field of a tracepoint record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub name: String,
    /// The C type as written, without the array suffix (`__u8`, `enum sk_rst_reason`).
    pub c_type: String,
    pub offset: usize,
    pub size: usize,
    pub signed: bool,
    /// Element count for array fields (`saddr[28]` has 28).
    pub array_len: Option<usize>,
}

/// A tracepoint's record layout, from its `format` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Format {
    pub fields: Vec<Field>,
}

impl Format {
    pub fn read(tracefs: &Path, category: &str, name: &str) -> Result<Self, TracefsError> {
        let path = tracefs.join("events").join(category).join(name).join("format");
        if !path.is_file() {
            return Err(TracefsError::NoTracepoint { category: category.into(), name: name.into() });
        }
        let text = std::fs::read_to_string(&path)
            .map_err(|error| TracefsError::Read { path: path.display().to_string(), error })?;
        Self::parse(&text).map_err(|line| TracefsError::Parse { path: path.display().to_string(), line })
    }

    /// Parses the text of a `format` file; on error returns the offending line.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut fields = Vec::new();
        for line in text.lines().map(str::trim).filter(|l| l.starts_with("field:")) {
            fields.push(parse_field(line).ok_or_else(|| line.to_string())?);
        }
        if fields.is_empty() {
            return Err("no `field:` lines".into());
        }
        Ok(Self { fields })
    }

    pub fn field(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.name == name)
    }

    /// Bytes from the start of the record to the end of its last field.
    pub fn record_len(&self) -> usize {
        self.fields.iter().map(|f| f.offset + f.size).max().unwrap_or(0)
    }
}

/// `field:const void * skbaddr;\toffset:8;\tsize:8;\tsigned:0;`
fn parse_field(line: &str) -> Option<Field> {
    let mut parts = line.split(';').map(str::trim);
    let decl = parts.next()?.strip_prefix("field:")?.trim();
    let mut offset = None;
    let mut size = None;
    let mut signed = false;
    for part in parts {
        match part.split_once(':') {
            Some(("offset", v)) => offset = v.trim().parse().ok(),
            Some(("size", v)) => size = v.trim().parse().ok(),
            Some(("signed", v)) => signed = v.trim() == "1",
            _ => {}
        }
    }
    // The name is the last identifier; anything before it is the type.
    let split = decl.rfind(|c: char| c.is_whitespace() || c == '*')?;
    let (c_type, name) = (decl[..=split].trim(), decl[split + 1..].trim());
    let (name, array_len) = match name.split_once('[') {
        Some((n, rest)) => (n, rest.trim_end_matches(']').parse().ok()),
        None => (name, None),
    };
    Some(Field { name: name.to_string(), c_type: c_type.to_string(), offset: offset?, size: size?, signed, array_len })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `tcp:tcp_send_reset` on Linux 6.18 (sockaddr-sized address fields).
    pub const SEND_RESET_6_18: &str = "name: tcp_send_reset
ID: 2280
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:const void * skbaddr;\toffset:8;\tsize:8;\tsigned:0;
\tfield:const void * skaddr;\toffset:16;\tsize:8;\tsigned:0;
\tfield:int state;\toffset:24;\tsize:4;\tsigned:1;
\tfield:enum sk_rst_reason reason;\toffset:28;\tsize:4;\tsigned:0;
\tfield:__u8 saddr[28];\toffset:32;\tsize:28;\tsigned:0;
\tfield:__u8 daddr[28];\toffset:60;\tsize:28;\tsigned:0;

print fmt: \"skbaddr=%p skaddr=%p src=%pISpc dest=%pISpc\", REC->skbaddr
";

    #[test]
    fn parses_pointer_enum_and_array_fields() {
        let f = Format::parse(SEND_RESET_6_18).unwrap();
        assert_eq!(f.fields.len(), 10);
        let skaddr = f.field("skaddr").unwrap();
        assert_eq!((skaddr.c_type.as_str(), skaddr.offset, skaddr.size), ("const void *", 16, 8));
        let reason = f.field("reason").unwrap();
        assert_eq!((reason.c_type.as_str(), reason.offset), ("enum sk_rst_reason", 28));
        let saddr = f.field("saddr").unwrap();
        assert_eq!((saddr.c_type.as_str(), saddr.array_len, saddr.size), ("__u8", Some(28), 28));
        assert!(f.field("state").unwrap().signed);
        assert_eq!(f.record_len(), 88);
    }

    #[test]
    fn rejects_a_file_without_fields_or_with_a_broken_field() {
        assert!(Format::parse("name: x\nformat:\n").is_err());
        assert_eq!(
            Format::parse("\tfield:int x;\toffset:zz;\tsize:4;\tsigned:1;").unwrap_err(),
            "field:int x;\toffset:zz;\tsize:4;\tsigned:1;"
        );
    }
}
