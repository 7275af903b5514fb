//! The figures of `bench resets`: derived values, the printed table and
//! `bench/results/resets.json`.

use std::{fmt::Write as _, fs};

use anyhow::Result;
use serde::Serialize;

use super::{bpftrace, observer::Stopped, resetgen};

/// One rate of the sweep.
pub struct RateRow {
    /// Target connects per second; 0 = unpaced.
    pub rate: u64,
    pub generated: resetgen::Report,
    /// The agent's `tcp.reset` events of the bench namespace.
    pub sent: u64,
    pub received: u64,
    pub agent: Stopped,
}

impl RateRow {
    fn expected(&self) -> u64 {
        2 * self.generated.count
    }

    fn observed(&self) -> u64 {
        self.sent + self.received
    }

    fn events_per_s(&self) -> f64 {
        self.observed() as f64 / self.generated.elapsed_s()
    }

    fn achieved_rate(&self) -> f64 {
        self.generated.count as f64 / self.generated.elapsed_s()
    }

    /// Agent CPU time per event it handled (all namespaces: its summary count).
    fn cpu_per_event_us(&self) -> Option<f64> {
        (self.agent.events > 0).then(|| self.agent.cpu.as_secs_f64() * 1e6 / self.agent.events as f64)
    }

    /// `ok` when every connect was refused and every reset seen once each way;
    /// `lost` when the agent counted losses; else `MISMATCH`.
    fn check(&self) -> &'static str {
        let g = &self.generated;
        if g.refused == g.count && self.sent == g.count && self.received == g.count {
            "ok"
        } else if self.agent.lost > 0 {
            "lost"
        } else {
            "MISMATCH"
        }
    }

    pub fn progress(&self) -> String {
        format!(
            "rate {}: {} connects in {:.3}s, {}/{} events, lost {}, agent CPU {:.3}s: {}",
            rate_name(self.rate),
            self.generated.count,
            self.generated.elapsed_s(),
            self.observed(),
            self.expected(),
            self.agent.lost,
            self.agent.cpu.as_secs_f64(),
            self.check()
        )
    }

    fn to_json(&self) -> RateJson {
        RateJson {
            target_rate_per_s: (self.rate > 0).then_some(self.rate),
            count: self.generated.count,
            refused: self.generated.refused,
            generation_s: self.generated.elapsed_s(),
            achieved_rate_per_s: self.achieved_rate(),
            events_expected: self.expected(),
            events_observed: self.observed(),
            sent: self.sent,
            received: self.received,
            events_per_s: self.events_per_s(),
            lost: self.agent.lost,
            agent_events_all_namespaces: self.agent.events,
            agent_cpu_s: self.agent.cpu.as_secs_f64(),
            agent_cpu_per_event_us: self.cpu_per_event_us(),
            check: self.check(),
        }
    }
}

/// What is attached while the unpaced connects run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Config {
    Baseline,
    Observer,
    Bpftrace,
}

impl Config {
    const ALL: [Config; 3] = [Config::Baseline, Config::Observer, Config::Bpftrace];

    fn name(self) -> &'static str {
        match self {
            Config::Baseline => "baseline",
            Config::Observer => "observer",
            Config::Bpftrace => "bpftrace",
        }
    }
}

/// One timed run of the kernel-side comparison.
pub struct Run {
    round: usize,
    config: Config,
    generated: resetgen::Report,
    /// The agent's summary and its events of the bench namespace.
    agent: Option<(Stopped, u64)>,
    /// What bpftrace counted (every namespace).
    bpftrace_count: Option<u64>,
}

impl Run {
    pub fn new(round: usize, config: Config, generated: resetgen::Report) -> Self {
        Self { round, config, generated, agent: None, bpftrace_count: None }
    }

    pub fn with_agent(mut self, stopped: Stopped, observed: u64) -> Self {
        self.agent = Some((stopped, observed));
        self
    }

    pub fn with_bpftrace(mut self, counted: Option<u64>) -> Self {
        self.bpftrace_count = counted;
        self
    }

    pub fn progress(&self) -> String {
        let mut line = format!(
            "round {} {:<8} {:.3}s, generator CPU {:.3}s ({} refused)",
            self.round + 1,
            self.config.name(),
            self.generated.elapsed_s(),
            self.generated.cpu_s(),
            self.generated.refused
        );
        if let Some((stopped, observed)) = &self.agent {
            let _ = write!(line, ", {observed} events, lost {}", stopped.lost);
        }
        if let Some(n) = self.bpftrace_count {
            let _ = write!(line, ", bpftrace counted {n}");
        }
        line
    }

    fn to_json(&self) -> RunJson {
        RunJson {
            round: self.round + 1,
            config: self.config,
            generation_s: self.generated.elapsed_s(),
            generator_cpu_s: self.generated.cpu_s(),
            refused: self.generated.refused,
            events_observed: self.agent.map(|(_, observed)| observed),
            lost: self.agent.map(|(stopped, _)| stopped.lost),
            bpftrace_count_all_namespaces: self.bpftrace_count,
        }
    }
}

/// The kernel-side comparison.
pub struct Overhead {
    pub runs: Vec<Run>,
    /// Why there are no bpftrace runs.
    pub bpftrace_missing: Option<String>,
}

impl Overhead {
    /// The sorted values of `figure` over the runs of `config`.
    fn sorted(&self, config: Config, figure: fn(&resetgen::Report) -> f64) -> Vec<f64> {
        let mut v: Vec<f64> = self.runs.iter().filter(|r| r.config == config).map(|r| figure(&r.generated)).collect();
        v.sort_by(f64::total_cmp);
        v
    }

    fn summary(&self, config: Config) -> Option<ConfigSummary> {
        let wall = self.sorted(config, resetgen::Report::elapsed_s);
        let cpu = self.sorted(config, resetgen::Report::cpu_s);
        let base_wall = median(&self.sorted(Config::Baseline, resetgen::Report::elapsed_s))?;
        let base_cpu = median(&self.sorted(Config::Baseline, resetgen::Report::cpu_s))?;
        let median_s = median(&wall)?;
        let median_cpu_s = median(&cpu)?;
        Some(ConfigSummary {
            config,
            runs: wall.len(),
            median_s,
            min_s: *wall.first()?,
            max_s: *wall.last()?,
            ratio: median_s / base_wall,
            median_cpu_s,
            cpu_ratio: median_cpu_s / base_cpu,
        })
    }

    fn ratio_json(&self, config: Config) -> RatioJson {
        let summary = self.summary(config);
        let reason_if_null = match (&summary, config) {
            (Some(_), _) => None,
            (None, Config::Bpftrace) => self.bpftrace_missing.clone(),
            (None, _) => Some("no runs".into()),
        };
        RatioJson {
            ratio: summary.as_ref().map(|s| s.ratio),
            cpu_ratio: summary.as_ref().map(|s| s.cpu_ratio),
            reason_if_null,
        }
    }
}

/// One configuration's figures against the baseline of the same run.
#[derive(Serialize)]
struct ConfigSummary {
    config: Config,
    runs: usize,
    median_s: f64,
    min_s: f64,
    max_s: f64,
    /// Median wall time ÷ the baseline's.
    ratio: f64,
    /// The generator's median CPU time (user + system).
    median_cpu_s: f64,
    /// Median generator CPU time ÷ the baseline's.
    cpu_ratio: f64,
}

/// The machine the figures come from.
#[derive(Serialize)]
struct Machine {
    kernel_release: String,
    nproc: usize,
    cpu_model: Option<String>,
    date: String,
}

impl Machine {
    fn read() -> Result<Self> {
        let kernel_release = fs::read_to_string("/proc/sys/kernel/osrelease")?.trim().to_string();
        let nproc = std::thread::available_parallelism().map_or(0, usize::from);
        let cpu_model = fs::read_to_string("/proc/cpuinfo").ok().and_then(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("model name")?.split_once(':'))
                .map(|(_, model)| model.trim().to_string())
        });
        let date = time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339)?;
        Ok(Self { kernel_release, nproc, cpu_model, date })
    }
}

pub struct Results {
    count: u64,
    machine: Machine,
    rates: Vec<RateRow>,
    overhead: Overhead,
}

impl Results {
    pub fn new(count: u64, rates: Vec<RateRow>, overhead: Overhead) -> Result<Self> {
        Ok(Self { count, machine: Machine::read()?, rates, overhead })
    }

    pub fn table(&self) -> String {
        let m = &self.machine;
        let mut t = String::new();
        let _ = writeln!(
            t,
            "\nbench resets: {} refused connects per run to 127.0.0.1 in a fresh network namespace\n\
             (each one RST sent + one received); kernel {}, {} CPUs, {}\n",
            self.count, m.kernel_release, m.nproc, m.date
        );
        let _ = writeln!(t, "rate sweep (one agent started per rate):");
        let _ = writeln!(
            t,
            "  {:>9} {:>10} {:>8} {:>8} {:>8} {:>7} {:>8} {:>10} {:>5} {:>8} {:>9}  check",
            "target/s",
            "achieved/s",
            "gen s",
            "expected",
            "observed",
            "sent",
            "received",
            "events/s",
            "lost",
            "agent s",
            "µs/event"
        );
        for r in &self.rates {
            let _ = writeln!(
                t,
                "  {:>9} {:>10.0} {:>8.3} {:>8} {:>8} {:>7} {:>8} {:>10.0} {:>5} {:>8.3} {:>9}  {}",
                rate_name(r.rate),
                r.achieved_rate(),
                r.generated.elapsed_s(),
                r.expected(),
                r.observed(),
                r.sent,
                r.received,
                r.events_per_s(),
                r.agent.lost,
                r.agent.cpu.as_secs_f64(),
                r.cpu_per_event_us().map_or("-".into(), |us| format!("{us:.2}")),
                r.check()
            );
        }
        let _ = writeln!(
            t,
            "\nkernel-side cost: {} unpaced connects per run, rounds interleaved, order rotated:",
            self.count
        );
        let _ = writeln!(
            t,
            "  {:<9} {:>4} {:>9} {:>8} {:>8} {:>10} {:>10} {:>10}",
            "attached", "runs", "median s", "min s", "max s", "÷ baseline", "gen CPU s", "÷ baseline"
        );
        for config in Config::ALL {
            let Some(s) = self.overhead.summary(config) else {
                let why = match config {
                    Config::Bpftrace => self.overhead.bpftrace_missing.as_deref(),
                    _ => None,
                };
                let _ = writeln!(t, "  {:<9} {}: ratio null", config.name(), why.unwrap_or("no runs"));
                continue;
            };
            let _ = writeln!(
                t,
                "  {:<9} {:>4} {:>9.4} {:>8.4} {:>8.4} {:>10.3} {:>10.4} {:>10.3}",
                config.name(),
                s.runs,
                s.median_s,
                s.min_s,
                s.max_s,
                s.ratio,
                s.median_cpu_s,
                s.cpu_ratio
            );
        }
        t
    }

    pub fn to_json(&self) -> impl Serialize + '_ {
        let o = &self.overhead;
        ResultsJson {
            bench: "resets",
            machine: &self.machine,
            count_per_run: self.count,
            rates: self.rates.iter().map(RateRow::to_json).collect(),
            kernel_side: KernelSideJson {
                rate: "unpaced",
                bpftrace_program: bpftrace::PROGRAM,
                observer_vs_baseline: o.ratio_json(Config::Observer),
                bpftrace_vs_baseline: o.ratio_json(Config::Bpftrace),
                configs: Config::ALL.iter().filter_map(|&c| o.summary(c)).collect(),
                repetitions: o.runs.iter().map(Run::to_json).collect(),
            },
        }
    }
}

#[derive(Serialize)]
struct ResultsJson<'a> {
    bench: &'static str,
    machine: &'a Machine,
    count_per_run: u64,
    rates: Vec<RateJson>,
    kernel_side: KernelSideJson,
}

#[derive(Serialize)]
struct RateJson {
    /// `null` for unpaced.
    target_rate_per_s: Option<u64>,
    count: u64,
    refused: u64,
    generation_s: f64,
    achieved_rate_per_s: f64,
    events_expected: u64,
    events_observed: u64,
    sent: u64,
    received: u64,
    events_per_s: f64,
    lost: u64,
    agent_events_all_namespaces: u64,
    agent_cpu_s: f64,
    agent_cpu_per_event_us: Option<f64>,
    check: &'static str,
}

#[derive(Serialize)]
struct KernelSideJson {
    rate: &'static str,
    bpftrace_program: &'static str,
    observer_vs_baseline: RatioJson,
    bpftrace_vs_baseline: RatioJson,
    configs: Vec<ConfigSummary>,
    repetitions: Vec<RunJson>,
}

#[derive(Serialize)]
struct RatioJson {
    /// Median generation time attached ÷ median baseline, same run.
    ratio: Option<f64>,
    /// The same for the generator's CPU time.
    cpu_ratio: Option<f64>,
    reason_if_null: Option<String>,
}

#[derive(Serialize)]
struct RunJson {
    round: usize,
    config: Config,
    generation_s: f64,
    generator_cpu_s: f64,
    refused: u64,
    events_observed: Option<u64>,
    lost: Option<u64>,
    bpftrace_count_all_namespaces: Option<u64>,
}

fn rate_name(rate: u64) -> String {
    if rate == 0 { "unlimited".into() } else { rate.to_string() }
}

/// The median of sorted figures.
pub(super) fn median(sorted: &[f64]) -> Option<f64> {
    let n = sorted.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(sorted[n / 2]),
        _ => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2.0),
    }
}

/// The median of figures in any order; NaN when there are none.
pub(super) fn median_of(mut figures: Vec<f64>) -> f64 {
    figures.sort_by(f64::total_cmp);
    median(&figures).unwrap_or(f64::NAN)
}

/// The median of one numeric field over a bench's per-round JSON records.
pub(super) fn median_field(runs: &[serde_json::Value], key: &str) -> f64 {
    median_of(runs.iter().filter_map(|r| r[key].as_f64()).collect())
}

/// Writes `path` through a `.tmp` sibling and a rename, so a reader never
/// sees half a result file.
pub(super) fn write_atomically(path: &std::path::Path, text: &str) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::median;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[1.0, 2.0, 9.0]), Some(2.0));
        assert_eq!(median(&[1.0, 2.0, 4.0, 9.0]), Some(3.0));
    }
}
