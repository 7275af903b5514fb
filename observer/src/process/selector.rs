//! `--go-process`: which Go processes get probes. A pure number is a pid, a
//! value with `/` or `.` in it a main module path (from the binary's build
//! info, e.g. `example.com/shop/api`), anything else a comm (the kernel's
//! process name, at most 15 bytes). No selector: every Go process.

use std::{fmt, str::FromStr};

/// Longest comm the kernel keeps (`TASK_COMM_LEN` less its NUL).
const COMM_MAX: usize = 15;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GoProcessSelector {
    Pid(u32),
    Module(String),
    Comm(String),
}

impl FromStr for GoProcessSelector {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        const ALLOWED: &str = "a pid, a comm (at most 15 bytes) or a main module path (with '/' or '.')";
        if s.is_empty() {
            return Err(format!("an empty Go process selector; give {ALLOWED}"));
        }
        if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!("`{s}` has blanks or control characters; give {ALLOWED}"));
        }
        if s.bytes().all(|b| b.is_ascii_digit()) {
            return match s.parse::<u32>() {
                Ok(pid) if pid > 0 && pid <= PID_MAX_LIMIT => Ok(Self::Pid(pid)),
                _ => Err(format!("`{s}` is not a pid (1 to {PID_MAX_LIMIT})")),
            };
        }
        if s.contains(['/', '.']) {
            return Ok(Self::Module(s.to_string()));
        }
        if s.len() > COMM_MAX {
            return Err(format!(
                "`{s}` is longer than a comm can be ({COMM_MAX} bytes: the kernel cuts process names there); give the first {COMM_MAX} bytes, a pid or the main module path"
            ));
        }
        Ok(Self::Comm(s.to_string()))
    }
}

/// The kernel's largest pid (`PID_MAX_LIMIT` on 64-bit).
const PID_MAX_LIMIT: u32 = 4 << 20;

impl fmt::Display for GoProcessSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Pid(pid) => write!(f, "pid {pid}"),
            Self::Module(m) => write!(f, "module {m}"),
            Self::Comm(c) => write!(f, "comm {c}"),
        }
    }
}

/// The selectors given; empty selects every Go process.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GoProcessSelection(pub Vec<GoProcessSelector>);

impl GoProcessSelection {
    /// Whether a Go process with this pid, comm and main module is selected.
    pub fn matches(&self, pid: u32, comm: &str, module: Option<&str>) -> bool {
        self.0.is_empty()
            || self.0.iter().any(|s| match s {
                GoProcessSelector::Pid(p) => *p == pid,
                GoProcessSelector::Comm(c) => c == comm,
                GoProcessSelector::Module(m) => module == Some(m.as_str()),
            })
    }

    /// Whether every process of a binary with this main module is selected,
    /// whatever its pid and comm: only then can the kernel watch a new one
    /// at its exec, before the agent has looked at it.
    pub fn selects_every_process_of(&self, module: Option<&str>) -> bool {
        self.0.is_empty()
            || self.0.iter().any(|s| matches!(s, GoProcessSelector::Module(m) if module == Some(m.as_str())))
    }
}

impl fmt::Display for GoProcessSelection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("all");
        }
        let parts: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&parts.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::{GoProcessSelection, GoProcessSelector::*};

    fn parse(s: &str) -> Result<super::GoProcessSelector, String> {
        s.parse()
    }

    #[test]
    fn only_no_selection_or_a_module_selects_every_process_of_a_binary() {
        let shop = Some("example.com/shop");
        assert!(GoProcessSelection(vec![]).selects_every_process_of(None));
        assert!(
            GoProcessSelection(vec![Comm("api".into()), Module("example.com/shop".into())])
                .selects_every_process_of(shop)
        );
        assert!(!GoProcessSelection(vec![Module("example.com/other".into())]).selects_every_process_of(shop));
        assert!(!GoProcessSelection(vec![Pid(7), Comm("shop".into())]).selects_every_process_of(shop));
    }

    #[test]
    fn numbers_are_pids_dots_and_slashes_modules_the_rest_comms() {
        assert_eq!(parse("4242"), Ok(Pid(4242)));
        assert_eq!(parse("example.com/shop/api"), Ok(Module("example.com/shop/api".into())));
        assert_eq!(parse("gofixture/v2"), Ok(Module("gofixture/v2".into())));
        assert_eq!(parse("std.lib"), Ok(Module("std.lib".into())));
        assert_eq!(parse("gofixture-go1.2"), Ok(Module("gofixture-go1.2".into())));
        assert_eq!(parse("api-server"), Ok(Comm("api-server".into())));
        assert_eq!(parse("123abc"), Ok(Comm("123abc".into())));
        assert_eq!(parse("exactly15bytes_"), Ok(Comm("exactly15bytes_".into())));
    }

    #[test]
    fn bad_values_name_the_value_and_what_is_allowed() {
        for (bad, says) in [
            ("", "empty"),
            ("0", "not a pid"),
            ("99999999999", "not a pid"),
            ("4194305", "not a pid"),
            ("a very long name", "blanks"),
            ("sixteen-bytes-xx", "longer than a comm"),
            ("tab\there", "blanks"),
        ] {
            let err = parse(bad).unwrap_err();
            assert!(err.contains(says) && err.contains(&format!("`{bad}`")) || bad.is_empty(), "{bad:?}: {err}");
        }
    }

    #[test]
    fn no_selector_selects_everything_else_any_one_that_matches() {
        let all = GoProcessSelection::default();
        assert!(all.matches(1, "x", None));
        let some = GoProcessSelection(vec![Pid(7), Comm("api".into()), Module("example.com/shop".into())]);
        assert!(some.matches(7, "other", None));
        assert!(some.matches(8, "api", None));
        assert!(some.matches(9, "other", Some("example.com/shop")));
        assert!(!some.matches(9, "apiserver", Some("example.com/shop/api")), "exact module and comm only");
        assert!(!some.matches(9, "other", None));
        assert_eq!(some.to_string(), "pid 7, comm api, module example.com/shop");
        assert_eq!(all.to_string(), "all");
    }
}
