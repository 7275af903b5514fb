//! Per signal (SPEC §1): the mechanism in use, or why there is none.
//! `attach::all` fills it in as it prepares, loads and attaches each source,
//! so `observer check` (which attaches, then detaches) and `observer run`
//! (which writes it to `<output-dir>/signals.json`) say the same thing.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// Every signal, in the order they are reported.
pub const ALL: &[&str] = &[
    "tcp.reset.sent",
    "tcp.reset.received",
    "net.drop",
    "tcp.retransmit",
    "memcg.high",
    "memcg.max",
    "memcg.throttle",
    "memcg.reclaim",
    "memcg.pressure",
    "memcg.oom_kill",
    "go.processes",
    "go.gc",
    "go.assist",
    "go.heap",
    "profile.cpu",
    "profile.alloc",
];

/// Where `observer run` writes the verdicts, in its output directory.
pub const FILE: &str = "signals.json";

/// Signals on the roadmap: this build does not collect them.
const NOT_BUILT: &[&str] = &["profile.cpu", "profile.alloc"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Active,
    Unavailable,
    NotBuiltYet,
}

impl Status {
    pub fn name(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Unavailable => "unavailable",
            Self::NotBuiltYet => "not built yet",
        }
    }
}

/// One signal's verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignalState {
    pub signal: String,
    pub status: Status,
    /// The mechanism when active; why not otherwise.
    pub detail: String,
}

/// The verdicts of every signal; one not set is unavailable ("not tried").
#[derive(Debug, Clone)]
pub struct Signals(Vec<SignalState>);

impl Default for Signals {
    fn default() -> Self {
        Self(
            ALL.iter()
                .map(|&signal| {
                    let built = !NOT_BUILT.contains(&signal);
                    SignalState {
                        signal: signal.to_string(),
                        status: if built { Status::Unavailable } else { Status::NotBuiltYet },
                        detail: if built { "not attached".into() } else { "on the roadmap".into() },
                    }
                })
                .collect(),
        )
    }
}

impl Signals {
    /// Records what `signal` uses (`Ok`) or why it cannot run (`Err`).
    pub fn set(&mut self, signal: &str, verdict: Result<String, String>) {
        let Some(state) = self.0.iter_mut().find(|s| s.signal == signal) else {
            debug_assert!(false, "unknown signal {signal}");
            return;
        };
        (state.status, state.detail) = match verdict {
            Ok(mechanism) => (Status::Active, mechanism),
            // A verifier log (with its timings) is for debugging, not the verdict.
            Err(why) => match why.split_once('\n') {
                Some((first, _)) => {
                    tracing::debug!("{signal}: {why}");
                    (Status::Unavailable, format!("{first} (the verifier's log: --log-level debug)"))
                }
                None => (Status::Unavailable, why),
            },
        };
    }

    pub fn list(&self) -> &[SignalState] {
        &self.0
    }

    pub fn active(&self) -> usize {
        self.0.iter().filter(|s| s.status == Status::Active).count()
    }

    /// Writes them as a JSON array (whole or not at all: through a rename).
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(&self.0).map_err(std::io::Error::other)?)?;
        std::fs::rename(&tmp, path)
    }

    /// `signal: why` of the unavailable ones (not those on the roadmap).
    pub fn unavailable(&self) -> impl Iterator<Item = &SignalState> {
        self.0.iter().filter(|s| s.status == Status::Unavailable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signal_not_set_is_unavailable_and_the_roadmap_stays_apart() {
        let mut s = Signals::default();
        s.set("net.drop", Ok("tracepoint skb:kfree_skb".into()));
        s.set("tcp.retransmit", Err("no tracepoint".into()));
        assert_eq!(s.active(), 1);
        let find = |name: &str| s.list().iter().find(|x| x.signal == name).unwrap().clone();
        assert_eq!(find("net.drop").status, Status::Active);
        assert_eq!(find("tcp.retransmit").detail, "no tracepoint");
        assert_eq!(find("go.gc").status, Status::Unavailable);
        assert_eq!(find("profile.cpu").status, Status::NotBuiltYet);
        assert!(s.unavailable().all(|x| x.status == Status::Unavailable));
        s.set("go.gc", Err("loading: Verifier output: x\n0: (bf) r6 = r1\nverification time 12 usec".into()));
        assert_eq!(
            s.list().iter().find(|x| x.signal == "go.gc").unwrap().detail,
            "loading: Verifier output: x (the verifier's log: --log-level debug)"
        );
        assert_eq!(s.list().len(), ALL.len());
    }
}
