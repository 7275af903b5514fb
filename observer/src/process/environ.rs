//! What a Go process was started with that changes how its runtime manages
//! memory: `GOGC`, `GOMEMLIMIT` and `GODEBUG` (`madvdontneed`, `gctrace`,
//! …) from `/proc/PID/environ`, read once when the agent attaches. The
//! runtime's effective GOGC and memory limit are on every `go.gc` event;
//! these say where they came from (and what `GODEBUG` changes besides).

use std::{io::Read, path::Path};

use serde::Serialize;

/// Bytes of `/proc/PID/environ` read at most.
pub const MAX_ENVIRON: u64 = 64 * 1024;
/// Bytes of one value kept at most; a longer one is cut and ends in `…`.
pub const MAX_VALUE: usize = 1024;

/// How far the environment could be read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EnvironRead {
    /// Read whole: an absent variable was not set.
    #[default]
    Read,
    /// Longer than [`MAX_ENVIRON`]: a variable past the cut is not known,
    /// so an absent one may still be set.
    Truncated,
    /// Not read (`environ_error` says why: the process exited, no
    /// permission): nothing is known.
    Unreadable,
}

/// The memory settings of a process's environment; `None`: not set (or
/// not known, see `environ`). Control characters are escaped (`\u{1b}`).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct GoEnv {
    pub environ: EnvironRead,
    pub environ_error: Option<String>,
    pub env_gogc: Option<String>,
    pub env_gomemlimit: Option<String>,
    pub env_godebug: Option<String>,
}

impl GoEnv {
    /// Reads `/proc/PID/environ`, bounded; never fails (an unreadable one
    /// says so).
    pub fn of_process(pid: u32) -> Self {
        let path = format!("/proc/{pid}/environ");
        match read_bounded(Path::new(&path)) {
            // The environ of a process that has exited (a zombie, or one
            // gone mid-read) reads as empty: not the same as an empty one.
            Ok(bytes) if bytes.is_empty() && std::fs::read_link(format!("/proc/{pid}/exe")).is_err() => {
                Self::unreadable("the process exited".into())
            }
            Ok(bytes) => Self::parse(&bytes),
            Err(err) => Self::unreadable(err.to_string()),
        }
    }

    fn unreadable(why: String) -> Self {
        Self { environ: EnvironRead::Unreadable, environ_error: Some(why), ..Self::default() }
    }

    /// The settings of a NUL-separated environment as read (at most
    /// [`MAX_ENVIRON`] bytes: more means it was cut).
    pub fn parse(environ: &[u8]) -> Self {
        let truncated = environ.len() as u64 > MAX_ENVIRON;
        let mut entries: Vec<&[u8]> = environ[..environ.len().min(MAX_ENVIRON as usize)].split(|&b| b == 0).collect();
        // The last entry is whole only when a NUL ends it (then it is empty).
        if truncated || !environ.ends_with(&[0]) {
            entries.pop();
        }
        let var =
            |name: &str| entries.iter().find_map(|kv| kv.strip_prefix(name.as_bytes())?.strip_prefix(b"=")).map(value);
        Self {
            environ: if truncated { EnvironRead::Truncated } else { EnvironRead::Read },
            environ_error: None,
            env_gogc: var("GOGC"),
            env_gomemlimit: var("GOMEMLIMIT"),
            env_godebug: var("GODEBUG"),
        }
    }
}

/// Up to one byte more than [`MAX_ENVIRON`], so that a cut is seen.
fn read_bounded(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    std::fs::File::open(path)?.take(MAX_ENVIRON + 1).read_to_end(&mut buf)?;
    Ok(buf)
}

/// A value as text: at most [`MAX_VALUE`] bytes, control characters escaped.
fn value(raw: &[u8]) -> String {
    let cut = raw.len() > MAX_VALUE;
    let text = String::from_utf8_lossy(&raw[..raw.len().min(MAX_VALUE)]);
    let mut out: String =
        text.chars().map(|c| if c.is_control() { c.escape_unicode().to_string() } else { c.to_string() }).collect();
    if cut {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_memory_settings_are_picked_out() {
        let env = GoEnv::parse(b"PATH=/bin\0GOGC=150\0GOMEMLIMIT=6GiB\0GODEBUG=madvdontneed=1,gctrace=1\0MYGOGC=1\0");
        assert_eq!(env.environ, EnvironRead::Read);
        assert_eq!(env.env_gogc.as_deref(), Some("150"));
        assert_eq!(env.env_gomemlimit.as_deref(), Some("6GiB"));
        assert_eq!(env.env_godebug.as_deref(), Some("madvdontneed=1,gctrace=1"));
        let none = GoEnv::parse(b"PATH=/bin\0GOGCX=1\0");
        assert_eq!((none.env_gogc, none.env_gomemlimit, none.env_godebug), (None, None, None));
        // Set twice: the Go runtime (`gogetenv`) takes the first.
        assert_eq!(GoEnv::parse(b"GOGC=1\0GOGC=2\0").env_gogc.as_deref(), Some("1"));
        assert_eq!(GoEnv::parse(b"GOGC=\0").env_gogc.as_deref(), Some(""));
    }

    #[test]
    fn values_are_bounded_and_escaped() {
        let env = GoEnv::parse(b"GODEBUG=a\x1b]0;x\x07b\0");
        assert_eq!(env.env_godebug.as_deref(), Some("a\\u{1b}]0;x\\u{7}b"));
        let long = [b"GODEBUG=".as_slice(), &[b'x'; MAX_VALUE + 10], b"\0"].concat();
        let cut = GoEnv::parse(&long).env_godebug.unwrap();
        assert_eq!(cut.len(), MAX_VALUE + '…'.len_utf8());
        assert!(cut.ends_with('…'));
    }

    #[test]
    fn a_cut_environment_says_so_and_drops_the_partial_entry() {
        let mut big = b"GOGC=50\0".to_vec();
        big.extend(std::iter::repeat_n(b'x', MAX_ENVIRON as usize));
        big.extend(b"\0GOMEMLIMIT=1GiB\0");
        let env = GoEnv::parse(&big);
        assert_eq!(env.environ, EnvironRead::Truncated);
        assert_eq!(env.env_gogc.as_deref(), Some("50"));
        assert_eq!(env.env_gomemlimit, None, "past the cut: unknown");
        // Without a final NUL the last entry may be cut short.
        assert_eq!(GoEnv::parse(b"GOGC=12").env_gogc, None);
    }

    #[test]
    fn a_process_that_is_gone_has_no_settings_and_says_why() {
        // A pid above pid_max: never a process.
        let env = GoEnv::of_process(u32::MAX);
        assert_eq!(env.environ, EnvironRead::Unreadable);
        assert!(env.environ_error.is_some());
        assert_eq!((env.env_gogc, env.env_gomemlimit, env.env_godebug), (None, None, None));
    }

    #[test]
    fn a_process_that_has_exited_is_not_taken_for_an_empty_environment() {
        // Not waited for yet: a zombie, whose environ reads as an error
        // (ESRCH, 6.18) or, on kernels that give no error, as empty.
        let mut child = std::process::Command::new("true").spawn().expect("spawn true");
        let pid = child.id();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z "))
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let env = GoEnv::of_process(pid);
        let _ = child.wait();
        assert_eq!(env.environ, EnvironRead::Unreadable, "{env:?}");
        assert!(env.environ_error.is_some());
    }

    #[test]
    fn this_process_is_read() {
        let env = GoEnv::of_process(std::process::id());
        assert_ne!(env.environ, EnvironRead::Unreadable, "{env:?}");
    }
}
