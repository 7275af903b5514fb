//! Command line, `OBSERVER_*` environment and TOML config file, validated once.
//! Precedence: flag, then environment, then config file, then default.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use clap::{Args, Parser, Subcommand};
use serde::Deserialize;

use crate::sources::memcg::Mechanism;

#[derive(Debug, Parser)]
#[command(name = "observer", version, about = "eBPF runtime observer for nodes that run Go services")]
pub struct Cli {
    /// Log level of the agent's own diagnostics (error, warn, info, debug, trace).
    #[arg(long, global = true, env = "OBSERVER_LOG_LEVEL", default_value = "warn", value_parser = ["error", "warn", "info", "debug", "trace"])]
    pub log_level: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Attach to the kernel and report events until stopped (SIGINT/SIGTERM) or --duration ends.
    Run(RunArgs),
    /// Probe what this kernel allows and print, per signal, the mechanism observer will use.
    Check(CheckArgs),
    /// Print the version.
    Version,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// TOML file with the same settings as the flags (`duration`, `output_dir`, `quiet`, `drop_events_per_sec`, `memcg_mechanism`).
    #[arg(long, env = "OBSERVER_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Stop after this long (e.g. `10s`, `5m`); runs until stopped when absent.
    #[arg(long, env = "OBSERVER_DURATION", value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Directory for events.jsonl [default: /var/lib/observer].
    #[arg(long, env = "OBSERVER_OUTPUT_DIR", value_name = "DIR")]
    pub output_dir: Option<PathBuf>,
    /// Do not print a line per event (the status line and files stay).
    #[arg(long, env = "OBSERVER_QUIET")]
    pub quiet: bool,
    /// Individual packet-drop events each CPU may send per second (all drops
    /// are still counted per netns and reason) [default: 200].
    #[arg(long, env = "OBSERVER_DROP_EVENTS_PER_SEC", value_name = "N")]
    pub drop_events_per_sec: Option<u32>,
    /// How cgroups' `memory.events` changes are noticed (inotify, or poll as
    /// the fallback) [default: inotify].
    #[arg(long, env = "OBSERVER_MEMCG_MECHANISM", value_name = "MECHANISM", value_enum)]
    pub memcg_mechanism: Option<Mechanism>,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Print the result as JSON.
    #[arg(long, env = "OBSERVER_CHECK_JSON")]
    pub json: bool,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("`{s}` is not a duration ({e}); use e.g. 10s, 5m, 1h"))
}

pub const DEFAULT_OUTPUT_DIR: &str = "/var/lib/observer";

/// The settings of `observer run`, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct RunConfig {
    pub duration: Option<Duration>,
    pub output_dir: PathBuf,
    pub quiet: bool,
    pub drop_events_per_sec: u32,
    pub memcg_mechanism: Mechanism,
}

pub const DEFAULT_DROP_EVENTS_PER_SEC: u32 = 200;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {error}")]
    Read { path: PathBuf, error: std::io::Error },
    #[error("config file {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// The config file's keys; unknown keys are an error, not ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    duration: Option<String>,
    output_dir: Option<PathBuf>,
    quiet: Option<bool>,
    drop_events_per_sec: Option<u32>,
    memcg_mechanism: Option<Mechanism>,
}

impl RunConfig {
    pub fn resolve(args: RunArgs) -> Result<Self, ConfigError> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let file_duration = match (&file.duration, &args.config) {
            (Some(d), Some(path)) => Some(
                parse_duration(d).map_err(|message| ConfigError::Invalid { path: path.clone(), message })?,
            ),
            _ => None,
        };
        Ok(Self {
            duration: args.duration.or(file_duration),
            output_dir: args.output_dir.or(file.output_dir).unwrap_or_else(|| DEFAULT_OUTPUT_DIR.into()),
            quiet: args.quiet || file.quiet.unwrap_or(false),
            drop_events_per_sec: args
                .drop_events_per_sec
                .or(file.drop_events_per_sec)
                .unwrap_or(DEFAULT_DROP_EVENTS_PER_SEC),
            memcg_mechanism: args.memcg_mechanism.or(file.memcg_mechanism).unwrap_or_default(),
        })
    }
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text =
        std::fs::read_to_string(path).map_err(|error| ConfigError::Read { path: path.to_path_buf(), error })?;
    toml::from_str(&text).map_err(|e| ConfigError::Invalid { path: path.to_path_buf(), message: e.message().to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_args(argv: &[&str]) -> RunArgs {
        let cli = Cli::try_parse_from(argv).unwrap();
        match cli.command {
            Command::Run(args) => args,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn defaults() {
        let cfg = RunConfig::resolve(run_args(&["observer", "run"])).unwrap();
        assert_eq!(
            cfg,
            RunConfig {
                duration: None,
                output_dir: DEFAULT_OUTPUT_DIR.into(),
                quiet: false,
                drop_events_per_sec: DEFAULT_DROP_EVENTS_PER_SEC,
                memcg_mechanism: Mechanism::Inotify,
            }
        );
    }

    #[test]
    fn memcg_mechanism_is_checked() {
        let args = run_args(&["observer", "run", "--memcg-mechanism", "poll"]);
        assert_eq!(RunConfig::resolve(args).unwrap().memcg_mechanism, Mechanism::Poll);
        let err = Cli::try_parse_from(["observer", "run", "--memcg-mechanism", "fanotify"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("fanotify"), "{err}");
    }

    #[test]
    fn bad_duration_names_the_value() {
        let err = Cli::try_parse_from(["observer", "run", "--duration", "banana"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("banana"), "{err}");
    }

    #[test]
    fn flags_win_over_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("observer.toml");
        std::fs::write(&file, "duration = \"5s\"\noutput_dir = \"/tmp/a\"\nquiet = true\n").unwrap();
        let cfg = RunConfig::resolve(run_args(&[
            "observer",
            "run",
            "--config",
            file.to_str().unwrap(),
            "--output-dir",
            "/tmp/b",
        ]))
        .unwrap();
        assert_eq!(cfg.duration, Some(Duration::from_secs(5)));
        assert_eq!(cfg.output_dir, PathBuf::from("/tmp/b"));
        assert!(cfg.quiet);
    }

    #[test]
    fn unknown_keys_and_bad_values_in_the_file_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("observer.toml");
        std::fs::write(&file, "colour = \"blue\"\n").unwrap();
        let err = RunConfig::resolve(run_args(&["observer", "run", "--config", file.to_str().unwrap()])).unwrap_err();
        assert!(err.to_string().contains("colour"), "{err}");
        std::fs::write(&file, "duration = \"soon\"\n").unwrap();
        let err = RunConfig::resolve(run_args(&["observer", "run", "--config", file.to_str().unwrap()])).unwrap_err();
        assert!(err.to_string().contains("soon"), "{err}");
    }
}
