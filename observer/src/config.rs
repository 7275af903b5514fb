//! Command line, `OBSERVER_*` environment and TOML config file, validated once.
//! Precedence: flag, then environment, then config file, then default.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use clap::{Args, Parser, Subcommand};
use serde::Deserialize;

use crate::{
    correlate::Rules,
    export::otlp::{NodeResource, OtlpConfig, OtlpConfigError},
    kube::KubeSettings,
    process::selector::{GoProcessSelection, GoProcessSelector},
    sources::memcg::{Mechanism, Pressure, Reclaim, Throttle},
};

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
    /// Attach as `run` would (then detach) and print, per signal, the mechanism it uses or why none works.
    Check(CheckArgs),
    /// List the episodes a run wrote to its data directory (newest first), or show one.
    Episodes(EpisodesArgs),
    /// Print the Go functions, files and lines (inlined calls first) at link-time addresses of a Go binary.
    Symbolize {
        /// The Go binary (stripped ones too: read from its `.gopclntab`).
        binary: PathBuf,
        /// Link-time addresses in hex (`0x` optional): a return address minus 1 for a caller.
        #[arg(required = true, value_name = "ADDR", value_parser = parse_hex_address)]
        addrs: Vec<u64>,
    },
    /// Print the version.
    Version,
}

fn parse_hex_address(text: &str) -> Result<u64, String> {
    let digits = text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")).unwrap_or(text);
    u64::from_str_radix(digits, 16).map_err(|err| format!("not a hex address ({err})"))
}

#[derive(Debug, Args)]
pub struct EpisodesArgs {
    /// The data directory a run wrote (its `--output-dir`; a copy from another machine will do) [default: /var/lib/observer].
    #[arg(long, global = true, env = "OBSERVER_OUTPUT_DIR", value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Only episodes of this kind (`memory.pressure` or `tcp.reset.burst`).
    #[arg(long, value_name = "KIND", value_parser = ["memory.pressure", "tcp.reset.burst"])]
    pub kind: Option<String>,
    /// Only episodes whose workload's name (`service.name`) contains this.
    #[arg(long, value_name = "TEXT")]
    pub name: Option<String>,
    /// Only episodes of pods in this Kubernetes namespace.
    #[arg(long, value_name = "NAMESPACE")]
    pub namespace: Option<String>,
    /// At most this many (the newest).
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    #[command(subcommand)]
    pub action: Option<EpisodesAction>,
}

#[derive(Debug, Subcommand)]
pub enum EpisodesAction {
    /// Print one episode's timeline: its children in time order, with their figures.
    Show {
        /// The episode's id (its trace id, or a prefix of it that only it has).
        id: String,
    },
}

/// Where `observer run` reports: a live view that owns the terminal, or lines.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Output {
    /// The live view when stdout and stdin are a terminal, else plain lines.
    #[default]
    Auto,
    /// The live view (an error when stdout is not a terminal).
    Tui,
    /// One line per closed episode (and per event with `--events`), no escape codes.
    Plain,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// TOML file with the same settings as the flags (`duration`, `output_dir`, `output`, `quiet`, `events`, `event_lines_per_sec`, `events_file`, `disk_budget`, `listen`, `episode_quiet`, `episode_max_length`, `episode_span_budget`, `drop_events_per_sec`, `profile_hz`, `profile_window`, `alloc_profiles`, `memcg_mechanism`, `memcg_throttle`, `memcg_pressure`, `memcg_reclaim`, `go_process`, `kubernetes`, `kubeconfig`, `node_name`, `cluster_name`).
    #[arg(long, env = "OBSERVER_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Stop after this long (e.g. `10s`, `5m`); runs until stopped when absent.
    #[arg(long, env = "OBSERVER_DURATION", value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Directory for events.jsonl [default: /var/lib/observer].
    #[arg(long, env = "OBSERVER_OUTPUT_DIR", value_name = "DIR")]
    pub output_dir: Option<PathBuf>,
    /// `auto` (the live view on a terminal, else lines), `tui` or `plain` [default: auto].
    #[arg(long, env = "OBSERVER_OUTPUT", value_name = "MODE", value_enum)]
    pub output: Option<Output>,
    /// Print nothing per episode or event on stdout (the status line and files stay).
    #[arg(long, env = "OBSERVER_QUIET")]
    pub quiet: bool,
    /// Also print one line per kernel event on stdout (by default only closed episodes are printed).
    #[arg(long, env = "OBSERVER_EVENTS")]
    pub events: bool,
    /// In line mode with `--events`, event lines printed a second at most; the rest are counted [default: 100].
    #[arg(long, env = "OBSERVER_EVENT_LINES_PER_SEC", value_name = "N")]
    pub event_lines_per_sec: Option<u32>,
    /// Do not write `events.jsonl` (one JSON object per event).
    #[arg(long, env = "OBSERVER_NO_EVENTS_FILE")]
    pub no_events_file: bool,
    /// Most bytes the files in the output directory may take together
    /// (e.g. `256MiB`, `1GiB`, `500MB`); the oldest rotated files go first [default: 256MiB].
    #[arg(long, env = "OBSERVER_DISK_BUDGET", value_name = "SIZE", value_parser = parse_size)]
    pub disk_budget: Option<u64>,
    /// Address of the `/metrics`, `/healthz` and `/readyz` endpoints, or
    /// `none` [default: 127.0.0.1:9464, this node only].
    #[arg(long, env = "OBSERVER_LISTEN", value_name = "ADDR:PORT|none", value_parser = parse_listen)]
    pub listen: Option<Listen>,
    /// An episode with no signal for this long closes [default: 5s].
    #[arg(long, env = "OBSERVER_EPISODE_QUIET", value_name = "DURATION", value_parser = parse_duration)]
    pub episode_quiet: Option<Duration>,
    /// An episode closes at this length; the next one links to it [default: 5m].
    #[arg(long, env = "OBSERVER_EPISODE_MAX_LENGTH", value_name = "DURATION", value_parser = parse_duration)]
    pub episode_max_length: Option<Duration>,
    /// Child spans per kind per episode; the rest fold into one aggregate span [default: 300].
    #[arg(long, env = "OBSERVER_EPISODE_SPAN_BUDGET", value_name = "N")]
    pub episode_span_budget: Option<usize>,
    /// Individual packet-drop events each CPU may send per second (all drops
    /// are still counted per netns and reason) [default: 200].
    #[arg(long, env = "OBSERVER_DROP_EVENTS_PER_SEC", value_name = "N")]
    pub drop_events_per_sec: Option<u32>,
    /// CPU samples per second per CPU of watched Go processes (0: no CPU
    /// profiles) [default: 19].
    #[arg(long, env = "OBSERVER_PROFILE_HZ", value_name = "N")]
    pub profile_hz: Option<u64>,
    /// Each watched process's rolling CPU profile covers this long
    /// (`profiles/windows/`, under the disk budget) [default: 60s].
    #[arg(long, env = "OBSERVER_PROFILE_WINDOW", value_name = "DURATION", value_parser = parse_duration)]
    pub profile_window: Option<Duration>,
    /// Allocation profiles of watched Go processes (uprobes on the runtime's
    /// allocation paths; `false`: none) [default: true].
    #[arg(long, env = "OBSERVER_ALLOC_PROFILES", value_name = "BOOL", action = clap::ArgAction::Set)]
    pub alloc_profiles: Option<bool>,
    /// How cgroups' `memory.events` changes are noticed (inotify, or poll as
    /// the fallback) [default: inotify].
    #[arg(long, env = "OBSERVER_MEMCG_MECHANISM", value_name = "MECHANISM", value_enum)]
    pub memcg_mechanism: Option<Mechanism>,
    /// How tasks throttled over `memory.high` are seen (auto: fentry, else
    /// kprobe, else vmscan; or one forced) [default: auto].
    #[arg(long, env = "OBSERVER_MEMCG_THROTTLE", value_name = "MECHANISM", value_enum)]
    pub memcg_throttle: Option<Throttle>,
    /// How `memory.pressure` stalls are noticed (trigger, or poll as the
    /// fallback) [default: trigger].
    #[arg(long, env = "OBSERVER_MEMCG_PRESSURE", value_name = "MECHANISM", value_enum)]
    pub memcg_pressure: Option<Pressure>,
    /// How memcg reclaim is seen (auto: the vmscan tracepoints, else
    /// `memory.stat` deltas; tracepoint; stat).
    #[arg(long, env = "OBSERVER_MEMCG_RECLAIM", value_name = "MECHANISM", value_enum)]
    pub memcg_reclaim: Option<Reclaim>,
    /// Go processes to attach to: a pid, a comm (process name, at most 15
    /// bytes) or a main module path (a value with '/' or '.'); repeat it for
    /// several, or comma-separate them in the environment [default: all Go processes].
    #[arg(long = "go-process", env = "OBSERVER_GO_PROCESS", value_name = "PID|COMM|MODULE", value_delimiter = ',')]
    pub go_processes: Vec<GoProcessSelector>,
    /// Pod metadata from the Kubernetes API: `auto` (on in a cluster, or with
    /// a kubeconfig), `on` (an error when no API server can be reached), `off`
    /// [default: auto]. Needs the `kubernetes` cargo feature (built in by default).
    #[arg(long, env = "OBSERVER_KUBERNETES", value_name = "MODE", value_enum)]
    pub kubernetes: Option<KubernetesMode>,
    /// The kubeconfig to reach the API server with [default: `KUBECONFIG`, else in-cluster].
    #[arg(long, env = "OBSERVER_KUBECONFIG", value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
    /// The Kubernetes node whose pods are watched [default: this machine's host name].
    #[arg(long, env = "OBSERVER_NODE_NAME", value_name = "NAME")]
    pub node_name: Option<String>,
    /// `k8s.cluster.name` on every workload's resource (unless `OTEL_RESOURCE_ATTRIBUTES` sets it).
    #[arg(long, env = "OBSERVER_CLUSTER_NAME", value_name = "NAME")]
    pub cluster_name: Option<String>,
}

/// `--kubernetes`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum KubernetesMode {
    /// On when running in a cluster (`KUBERNETES_SERVICE_HOST` and a
    /// service-account token) or given a kubeconfig.
    #[default]
    Auto,
    On,
    Off,
}

/// The service-account token a pod of a cluster has.
pub const IN_CLUSTER_TOKEN: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Print the result as JSON.
    #[arg(long, env = "OBSERVER_CHECK_JSON")]
    pub json: bool,
    /// Only list the capabilities the agent uses, one `CAP_NAME signals`
    /// line each, and exit (what the Helm chart grants is tested against it).
    #[arg(long)]
    pub capabilities: bool,
    /// The settings `run` would be given: check tells what they would use.
    #[command(flatten)]
    pub run: RunArgs,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("`{s}` is not a duration ({e}); use e.g. 10s, 5m, 1h"))
}

/// `256MiB`, `1GiB`, `500MB`, `4096` (bytes): at least `MIN_BUDGET`.
fn parse_size(s: &str) -> Result<u64, String> {
    use crate::export::disk::MIN_BUDGET;
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let unit_bytes: u64 = match unit.trim() {
        "" | "B" => 1,
        "KB" | "kB" => 1000,
        "KiB" => 1 << 10,
        "MB" => 1000 * 1000,
        "MiB" => 1 << 20,
        "GB" => 1000 * 1000 * 1000,
        "GiB" => 1 << 30,
        other => return Err(format!("`{s}`: unknown unit `{other}`; use e.g. 256MiB, 1GiB, 500MB")),
    };
    let bytes = number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(unit_bytes))
        .ok_or_else(|| format!("`{s}` is not a size; use e.g. 256MiB, 1GiB, 500MB"))?;
    if bytes < MIN_BUDGET {
        return Err(format!("`{s}` is below the smallest budget, {} KiB", MIN_BUDGET >> 10));
    }
    Ok(bytes)
}

/// Where the endpoints listen, if anywhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listen {
    At(std::net::SocketAddr),
    Nowhere,
}

/// `127.0.0.1:9464`, `[::]:9464`, `0.0.0.0:0` (any free port) or `none`.
fn parse_listen(s: &str) -> Result<Listen, String> {
    match s.trim() {
        "none" | "off" => Ok(Listen::Nowhere),
        t => t.parse().map(Listen::At).map_err(|_| {
            format!("`{s}` is not an address to listen on; use e.g. 127.0.0.1:9464, 0.0.0.0:9464 or none")
        }),
    }
}

pub const DEFAULT_OUTPUT_DIR: &str = "/var/lib/observer";

/// The settings of `observer run`, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct RunConfig {
    pub duration: Option<Duration>,
    pub output_dir: PathBuf,
    pub output: Output,
    pub quiet: bool,
    pub events: bool,
    pub event_lines_per_sec: u32,
    pub events_file: bool,
    /// Bytes the output directory's files may take (`export::disk`).
    pub disk_budget: u64,
    /// The metrics and health endpoints' address; `None`: not served.
    pub listen: Option<std::net::SocketAddr>,
    pub episodes: Rules,
    /// `None`: no endpoint set; episodes go to `traces.jsonl` only.
    pub otlp: Option<OtlpConfig>,
    /// `OTEL_RESOURCE_ATTRIBUTES` and the host name, for every workload's resource.
    pub node: NodeResource,
    pub drop_events_per_sec: u32,
    /// CPU samples per second per CPU; 0: no CPU profiles.
    pub profile_hz: u64,
    pub profile_window: Duration,
    /// Allocation profiles (their uprobes attached).
    pub alloc_profiles: bool,
    pub memcg_mechanism: Mechanism,
    pub memcg_throttle: Throttle,
    pub memcg_pressure: Pressure,
    pub memcg_reclaim: Reclaim,
    pub go_processes: GoProcessSelection,
    /// `None`: no Kubernetes metadata (off, or nothing to reach).
    pub kubernetes: Option<KubeSettings>,
}

pub const DEFAULT_DROP_EVENTS_PER_SEC: u32 = 200;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {error}")]
    Read { path: PathBuf, error: std::io::Error },
    #[error("config file {path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("{0}")]
    Otlp(#[from] OtlpConfigError),
    #[error("{0}")]
    Value(String),
}

/// The config file's keys; unknown keys are an error, not ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    duration: Option<String>,
    output_dir: Option<PathBuf>,
    output: Option<Output>,
    quiet: Option<bool>,
    events: Option<bool>,
    event_lines_per_sec: Option<u32>,
    events_file: Option<bool>,
    disk_budget: Option<String>,
    listen: Option<String>,
    episode_quiet: Option<String>,
    episode_max_length: Option<String>,
    episode_span_budget: Option<usize>,
    drop_events_per_sec: Option<u32>,
    profile_hz: Option<u64>,
    profile_window: Option<String>,
    alloc_profiles: Option<bool>,
    memcg_mechanism: Option<Mechanism>,
    memcg_throttle: Option<Throttle>,
    memcg_pressure: Option<Pressure>,
    memcg_reclaim: Option<Reclaim>,
    go_process: Option<Vec<String>>,
    kubernetes: Option<KubernetesMode>,
    kubeconfig: Option<PathBuf>,
    node_name: Option<String>,
    cluster_name: Option<String>,
}

impl RunConfig {
    pub fn resolve(args: RunArgs) -> Result<Self, ConfigError> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let file_duration = match (&file.duration, &args.config) {
            (Some(d), Some(path)) => {
                Some(parse_duration(d).map_err(|message| ConfigError::Invalid { path: path.clone(), message })?)
            }
            _ => None,
        };
        let file_budget = match (&file.disk_budget, &args.config) {
            (Some(b), Some(path)) => {
                Some(parse_size(b).map_err(|message| ConfigError::Invalid { path: path.clone(), message })?)
            }
            _ => None,
        };
        let disk_budget = args.disk_budget.or(file_budget).unwrap_or(crate::export::disk::DEFAULT_BUDGET);
        let file_listen = match (&file.listen, &args.config) {
            (Some(l), Some(path)) => {
                Some(parse_listen(l).map_err(|message| ConfigError::Invalid { path: path.clone(), message })?)
            }
            _ => None,
        };
        let listen = match args.listen.or(file_listen) {
            Some(Listen::At(addr)) => Some(addr),
            Some(Listen::Nowhere) => None,
            None => Some(crate::export::metrics::server::DEFAULT_LISTEN.parse().expect("a valid default")),
        };
        let file_go_processes = match (file.go_process, &args.config) {
            (Some(values), Some(path)) => values
                .iter()
                .map(|v| v.parse().map_err(|message| ConfigError::Invalid { path: path.clone(), message }))
                .collect::<Result<_, _>>()?,
            _ => Vec::new(),
        };
        let file_time = |value: &Option<String>| match (value, &args.config) {
            (Some(d), Some(path)) => {
                parse_duration(d).map(Some).map_err(|message| ConfigError::Invalid { path: path.clone(), message })
            }
            _ => Ok(None),
        };
        let defaults = Rules::default();
        let episodes = Rules {
            quiet: args.episode_quiet.or(file_time(&file.episode_quiet)?).unwrap_or(defaults.quiet),
            max_length: args.episode_max_length.or(file_time(&file.episode_max_length)?).unwrap_or(defaults.max_length),
            span_budget: args.episode_span_budget.or(file.episode_span_budget).unwrap_or(defaults.span_budget),
            ..defaults
        };
        if episodes.quiet.is_zero() || episodes.max_length < episodes.quiet || episodes.span_budget == 0 {
            return Err(ConfigError::Value(format!(
                "episode settings: quiet {:?} must be above 0 and at most max length {:?}, span budget {} above 0",
                episodes.quiet, episodes.max_length, episodes.span_budget
            )));
        }
        let profile_hz = args.profile_hz.or(file.profile_hz).unwrap_or(crate::profile::DEFAULT_HZ);
        if profile_hz > crate::profile::MAX_HZ {
            return Err(ConfigError::Value(format!(
                "--profile-hz {profile_hz}: at most {} samples per second per CPU (0 turns CPU profiles off)",
                crate::profile::MAX_HZ
            )));
        }
        let profile_window =
            args.profile_window.or(file_time(&file.profile_window)?).unwrap_or(crate::profile::DEFAULT_WINDOW);
        if profile_window < crate::profile::SLICE {
            return Err(ConfigError::Value(format!(
                "--profile-window {profile_window:?}: at least {:?} (profiles are read from the kernel that often)",
                crate::profile::SLICE
            )));
        }
        let event_lines_per_sec =
            args.event_lines_per_sec.or(file.event_lines_per_sec).unwrap_or(crate::export::live::EVENT_LINES_PER_SEC);
        if event_lines_per_sec == 0 {
            return Err(ConfigError::Value("--event-lines-per-sec 0: must be at least 1".into()));
        }
        let mut node = NodeResource::from_env()?;
        if let Some(cluster) = args.cluster_name.clone().or(file.cluster_name.clone()).filter(|c| !c.is_empty())
            && !node.attributes.iter().any(|(k, _)| k == "k8s.cluster.name")
        {
            node.attributes.push(("k8s.cluster.name".into(), cluster));
        }
        let kubernetes = kube_settings(
            args.kubernetes.or(file.kubernetes).unwrap_or_default(),
            args.kubeconfig.clone().or(file.kubeconfig.clone()),
            args.node_name.clone().or(file.node_name.clone()),
            &|name| std::env::var_os(name).filter(|v| !v.is_empty()),
            Path::new(IN_CLUSTER_TOKEN).exists(),
        )?;
        Ok(Self {
            duration: args.duration.or(file_duration),
            output_dir: args.output_dir.or(file.output_dir).unwrap_or_else(|| DEFAULT_OUTPUT_DIR.into()),
            output: args.output.or(file.output).unwrap_or_default(),
            quiet: args.quiet || file.quiet.unwrap_or(false),
            events: args.events || file.events.unwrap_or(false),
            event_lines_per_sec,
            events_file: !args.no_events_file && file.events_file.unwrap_or(true),
            disk_budget,
            listen,
            episodes,
            otlp: OtlpConfig::from_env()?,
            node,
            drop_events_per_sec: args
                .drop_events_per_sec
                .or(file.drop_events_per_sec)
                .unwrap_or(DEFAULT_DROP_EVENTS_PER_SEC),
            profile_hz,
            profile_window,
            alloc_profiles: args.alloc_profiles.or(file.alloc_profiles).unwrap_or(true),
            memcg_mechanism: args.memcg_mechanism.or(file.memcg_mechanism).unwrap_or_default(),
            memcg_throttle: args.memcg_throttle.or(file.memcg_throttle).unwrap_or_default(),
            memcg_pressure: args.memcg_pressure.or(file.memcg_pressure).unwrap_or_default(),
            memcg_reclaim: args.memcg_reclaim.or(file.memcg_reclaim).unwrap_or_default(),
            go_processes: GoProcessSelection(if args.go_processes.is_empty() {
                file_go_processes
            } else {
                args.go_processes
            }),
            kubernetes,
        })
    }
}

/// `--kubernetes` resolved: where the API server is and whose pods, or
/// `None` for no metadata. `env` reads `KUBECONFIG` and
/// `KUBERNETES_SERVICE_HOST`; `token`: the service-account token is there.
/// An explicit kubeconfig, then `KUBECONFIG`, then in-cluster (client-go's order).
fn kube_settings(
    mode: KubernetesMode,
    kubeconfig: Option<PathBuf>,
    node_name: Option<String>,
    env: &dyn Fn(&str) -> Option<std::ffi::OsString>,
    token: bool,
) -> Result<Option<KubeSettings>, ConfigError> {
    use crate::kube::ApiSource;
    if mode == KubernetesMode::Off {
        return Ok(None);
    }
    let asked = mode == KubernetesMode::On || kubeconfig.is_some();
    if !crate::kube::BUILT_IN {
        return match asked {
            true => Err(ConfigError::Value(
                "--kubernetes on / --kubeconfig: this observer was built without the `kubernetes` cargo feature; rebuild with it (the default) or use --kubernetes off".into(),
            )),
            false => Ok(None),
        };
    }
    let in_cluster = env("KUBERNETES_SERVICE_HOST").is_some() && token;
    let source = match kubeconfig.or_else(|| env("KUBECONFIG").map(PathBuf::from)) {
        Some(path) => ApiSource::Kubeconfig(path),
        None if in_cluster => ApiSource::InCluster,
        None if mode == KubernetesMode::On => {
            return Err(ConfigError::Value(format!(
                "--kubernetes on: no Kubernetes API server to reach: no --kubeconfig, no KUBECONFIG, and not in a cluster (KUBERNETES_SERVICE_HOST unset or no token at {IN_CLUSTER_TOKEN})"
            )));
        }
        None => return Ok(None),
    };
    let node_name = match node_name {
        Some(name) if name.trim().is_empty() => return Err(ConfigError::Value("--node-name: empty".into())),
        Some(name) => name,
        None => crate::export::otlp::resource::host_name().ok_or_else(|| {
            ConfigError::Value(
                "--kubernetes: this machine has no host name to watch the pods of; give --node-name".into(),
            )
        })?,
    };
    Ok(Some(KubeSettings { source, node_name }))
}

impl RunConfig {
    /// Whether the live view draws: `auto` on a terminal (stdout and stdin,
    /// `TERM` not `dumb`), `tui` only there (else an error), never `plain`.
    pub fn live_view(&self) -> Result<bool, ConfigError> {
        use std::io::IsTerminal;
        let tty = std::io::stdout().is_terminal() && std::io::stdin().is_terminal();
        let dumb = std::env::var("TERM").is_ok_and(|t| t == "dumb");
        match self.output {
            Output::Plain => Ok(false),
            Output::Auto => Ok(tty && !dumb),
            Output::Tui if tty => Ok(true),
            Output::Tui => Err(ConfigError::Value(
                "--output tui needs a terminal, and stdout or stdin is not one; use --output plain (or auto) for lines"
                    .into(),
            )),
        }
    }
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read { path: path.to_path_buf(), error })?;
    toml::from_str(&text)
        .map_err(|e| ConfigError::Invalid { path: path.to_path_buf(), message: e.message().to_string() })
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
    fn sizes_parse_with_units_and_bad_ones_say_why() {
        assert_eq!(parse_size("256MiB"), Ok(256 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("500MB"), Ok(500_000_000));
        assert_eq!(parse_size("65536"), Ok(65536));
        assert!(parse_size("1KiB").unwrap_err().contains("smallest"), "below the minimum");
        assert!(parse_size("12furlongs").unwrap_err().contains("unknown unit"));
        assert!(parse_size("MiB").unwrap_err().contains("not a size"));
        assert!(parse_size("99999999999GiB").unwrap_err().contains("not a size"), "overflow");
    }

    #[test]
    fn defaults() {
        let cfg = RunConfig::resolve(run_args(&["observer", "run"])).unwrap();
        assert_eq!(
            cfg,
            RunConfig {
                duration: None,
                output_dir: DEFAULT_OUTPUT_DIR.into(),
                output: Output::Auto,
                quiet: false,
                events: false,
                event_lines_per_sec: crate::export::live::EVENT_LINES_PER_SEC,
                events_file: true,
                disk_budget: crate::export::disk::DEFAULT_BUDGET,
                listen: Some("127.0.0.1:9464".parse().unwrap()),
                episodes: Rules::default(),
                otlp: None,
                node: cfg.node.clone(),
                drop_events_per_sec: DEFAULT_DROP_EVENTS_PER_SEC,
                profile_hz: crate::profile::DEFAULT_HZ,
                profile_window: crate::profile::DEFAULT_WINDOW,
                alloc_profiles: true,
                memcg_mechanism: Mechanism::Inotify,
                memcg_throttle: Throttle::Auto,
                memcg_pressure: Pressure::Trigger,
                memcg_reclaim: Reclaim::Auto,
                go_processes: GoProcessSelection::default(),
                kubernetes: cfg.kubernetes.clone(),
            }
        );
    }

    #[test]
    fn listen_takes_an_address_or_none_and_says_why_not() {
        let cfg = |argv: &[&str]| RunConfig::resolve(run_args(argv)).map(|c| c.listen);
        assert_eq!(
            cfg(&["observer", "run", "--listen", "0.0.0.0:9999"]).unwrap(),
            Some("0.0.0.0:9999".parse().unwrap())
        );
        assert_eq!(cfg(&["observer", "run", "--listen", "none"]).unwrap(), None);
        let err = Cli::try_parse_from(["observer", "run", "--listen", "localhost"]).unwrap_err().to_string();
        assert!(err.contains("not an address to listen on"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("observer.toml");
        std::fs::write(&file, "listen = \"[::1]:0\"\n").unwrap();
        let from_file = cfg(&["observer", "run", "--config", file.to_str().unwrap()]).unwrap();
        assert_eq!(from_file, Some("[::1]:0".parse().unwrap()));
    }

    #[test]
    fn go_processes_from_flags_or_the_file() {
        use GoProcessSelector::*;
        let args = run_args(&["observer", "run", "--go-process", "42", "--go-process", "example.com/api,api"]);
        let cfg = RunConfig::resolve(args).unwrap();
        assert_eq!(cfg.go_processes.0, vec![Pid(42), Module("example.com/api".into()), Comm("api".into())]);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("observer.toml");
        std::fs::write(&file, "go_process = [\"shop\", \"7\"]\n").unwrap();
        let from_file = |extra: &[&str]| {
            let mut argv = vec!["observer", "run", "--config", file.to_str().unwrap()];
            argv.extend_from_slice(extra);
            RunConfig::resolve(run_args(&argv))
        };
        assert_eq!(from_file(&[]).unwrap().go_processes.0, vec![Comm("shop".into()), Pid(7)]);
        assert_eq!(from_file(&["--go-process", "9"]).unwrap().go_processes.0, vec![Pid(9)], "flags win");
        std::fs::write(&file, "go_process = [\"0\"]\n").unwrap();
        let err = from_file(&[]).unwrap_err();
        assert!(err.to_string().contains("`0` is not a pid"), "{err}");
    }

    #[test]
    fn bad_go_process_is_a_usage_error() {
        let err = Cli::try_parse_from(["observer", "run", "--go-process", "much-too-long-a-name"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("much-too-long-a-name"), "{err}");
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
    fn memcg_throttle_and_pressure_come_from_flags_or_the_file() {
        let args = run_args(&["observer", "run", "--memcg-throttle", "kprobe", "--memcg-pressure", "poll"]);
        let cfg = RunConfig::resolve(args).unwrap();
        assert_eq!((cfg.memcg_throttle, cfg.memcg_pressure), (Throttle::Kprobe, Pressure::Poll));
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("observer.toml");
        std::fs::write(&file, "memcg_throttle = \"vmscan\"\nmemcg_pressure = \"poll\"\n").unwrap();
        let cfg = RunConfig::resolve(run_args(&["observer", "run", "--config", file.to_str().unwrap()])).unwrap();
        assert_eq!((cfg.memcg_throttle, cfg.memcg_pressure), (Throttle::Vmscan, Pressure::Poll));
        let err = Cli::try_parse_from(["observer", "run", "--memcg-throttle", "uprobe"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("uprobe"), "{err}");
    }

    #[test]
    fn memcg_reclaim_comes_from_the_flag_or_the_file() {
        let cfg = RunConfig::resolve(run_args(&["observer", "run", "--memcg-reclaim", "stat"])).unwrap();
        assert_eq!(cfg.memcg_reclaim, Reclaim::Stat);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("observer.toml");
        std::fs::write(&file, "memcg_reclaim = \"tracepoint\"\n").unwrap();
        let cfg = RunConfig::resolve(run_args(&["observer", "run", "--config", file.to_str().unwrap()])).unwrap();
        assert_eq!(cfg.memcg_reclaim, Reclaim::Tracepoint);
        let err = Cli::try_parse_from(["observer", "run", "--memcg-reclaim", "kprobe"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
    }

    #[test]
    fn output_mode_from_the_flag_or_the_file() {
        let cfg = RunConfig::resolve(run_args(&["observer", "run", "--output", "plain"])).unwrap();
        assert_eq!(cfg.output, Output::Plain);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("observer.toml");
        std::fs::write(&file, "output = \"tui\"\n").unwrap();
        let cfg = RunConfig::resolve(run_args(&["observer", "run", "--config", file.to_str().unwrap()])).unwrap();
        assert_eq!(cfg.output, Output::Tui);
        let err = Cli::try_parse_from(["observer", "run", "--output", "fancy"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("fancy"), "{err}");
    }

    #[test]
    fn episodes_takes_a_dir_before_or_after_show() {
        let cli = Cli::try_parse_from(["observer", "episodes", "show", "abc", "--dir", "/tmp/x"]).unwrap();
        let Command::Episodes(args) = cli.command else { panic!() };
        assert_eq!(args.dir, Some(PathBuf::from("/tmp/x")));
        assert!(matches!(args.action, Some(EpisodesAction::Show { ref id }) if id == "abc"));
        let cli = Cli::try_parse_from(["observer", "episodes", "--dir", "/d", "--kind", "tcp.reset.burst"]).unwrap();
        let Command::Episodes(args) = cli.command else { panic!() };
        assert_eq!(
            (args.dir, args.kind.as_deref(), args.action.is_none()),
            (Some("/d".into()), Some("tcp.reset.burst"), true)
        );
        assert_eq!(Cli::try_parse_from(["observer", "episodes", "--kind", "x"]).unwrap_err().exit_code(), 2);
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

    #[cfg(feature = "kubernetes")]
    #[test]
    fn kubernetes_is_on_with_a_kubeconfig_or_in_a_cluster() {
        use crate::kube::{ApiSource, KubeSettings};
        use KubernetesMode::*;
        let none = |_: &str| None;
        let cluster = |name: &str| (name == "KUBERNETES_SERVICE_HOST").then(|| "10.96.0.1".into());
        let env_kubeconfig = |name: &str| (name == "KUBECONFIG").then(|| "/env/kc".into());
        let node = Some("node-a".to_string());
        let settings = |source| Ok(Some(KubeSettings { source, node_name: "node-a".into() }));
        let resolve = |mode, kc: Option<&str>, env: &dyn Fn(&str) -> Option<std::ffi::OsString>, token| {
            kube_settings(mode, kc.map(PathBuf::from), node.clone(), env, token).map_err(|e| e.to_string())
        };
        assert_eq!(resolve(Auto, None, &none, true), Ok(None), "no service host: not in a cluster");
        assert_eq!(resolve(Auto, None, &cluster, false), Ok(None), "no token: not in a cluster");
        assert_eq!(resolve(Auto, None, &cluster, true), settings(ApiSource::InCluster));
        assert_eq!(resolve(Auto, Some("/kc"), &cluster, true), settings(ApiSource::Kubeconfig("/kc".into())));
        assert_eq!(resolve(Auto, None, &env_kubeconfig, false), settings(ApiSource::Kubeconfig("/env/kc".into())));
        assert_eq!(resolve(On, Some("/kc"), &none, false), settings(ApiSource::Kubeconfig("/kc".into())));
        assert_eq!(resolve(Off, Some("/kc"), &cluster, true), Ok(None));
        let err = resolve(On, None, &none, false).unwrap_err();
        assert!(err.contains("--kubernetes on") && err.contains("KUBECONFIG"), "{err}");
        let err = kube_settings(On, Some("/kc".into()), Some(" ".into()), &none, false).unwrap_err();
        assert!(err.to_string().contains("--node-name"), "{err}");
    }

    #[cfg(feature = "kubernetes")]
    #[test]
    fn kubernetes_settings_come_from_flags_or_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("observer.toml");
        std::fs::write(
            &file,
            "kubernetes = \"on\"\nkubeconfig = \"/f/kc\"\nnode_name = \"n1\"\ncluster_name = \"prod\"\n",
        )
        .unwrap();
        let cfg = RunConfig::resolve(run_args(&["observer", "run", "--config", file.to_str().unwrap()])).unwrap();
        let kube = cfg.kubernetes.expect("on");
        assert_eq!(kube.source, crate::kube::ApiSource::Kubeconfig("/f/kc".into()));
        assert_eq!(kube.node_name, "n1");
        assert!(cfg.node.attributes.contains(&("k8s.cluster.name".into(), "prod".into())), "{:?}", cfg.node);
        let args = run_args(&["observer", "run", "--config", file.to_str().unwrap(), "--kubernetes", "off"]);
        assert_eq!(RunConfig::resolve(args).unwrap().kubernetes, None, "the flag wins");
        let err = Cli::try_parse_from(["observer", "run", "--kubernetes", "maybe"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("maybe"), "{err}");
    }
}
