//! The kernel's own count of a tracepoint: a private tracefs instance with
//! the event enabled (and filtered), read back, removed on drop.

use std::path::PathBuf;

/// The mounted tracefs (the agent mounts it when it starts).
pub fn root() -> PathBuf {
    ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.join("instances").is_dir())
        .expect("tracefs is not mounted")
}

pub struct TraceInstance {
    dir: PathBuf,
    event: PathBuf,
}

impl TraceInstance {
    /// `instances/obs-<pid>-<tag>` with `category/name` enabled under `filter`.
    pub fn new(tag: &str, category: &str, name: &str, filter: &str) -> TraceInstance {
        let dir = root().join("instances").join(format!("obs-{}-{tag}", std::process::id()));
        std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        let event = dir.join("events").join(category).join(name);
        let instance = TraceInstance { dir, event };
        std::fs::write(instance.event.join("filter"), filter).unwrap_or_else(|e| panic!("filter {filter:?}: {e}"));
        std::fs::write(instance.event.join("enable"), "1").expect("enable the event");
        instance
    }

    /// Stops recording and returns the recorded event lines.
    pub fn stop(&self) -> Vec<String> {
        std::fs::write(self.event.join("enable"), "0").expect("disable the event");
        let text = std::fs::read_to_string(self.dir.join("trace")).expect("read the instance's trace");
        text.lines().filter(|l| !l.starts_with('#')).map(str::to_string).collect()
    }
}

impl Drop for TraceInstance {
    fn drop(&mut self) {
        let _ = std::fs::write(self.event.join("enable"), "0");
        // An instance directory is removed with rmdir, whatever it holds.
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// A `kprobe_events` probe `p:GROUP/NAME FUNCTION`: tracefs' own count of
/// entries to a kernel function. Removed on drop.
pub struct KprobeEvent {
    pub group: String,
    pub name: String,
}

impl KprobeEvent {
    pub fn new(group: &str, name: &str, function: &str) -> KprobeEvent {
        let probe = KprobeEvent { group: group.into(), name: name.into() };
        // Appending: a plain write would clear every other probe.
        append_kprobe_events(&format!("p:{group}/{name} {function}"))
            .unwrap_or_else(|e| panic!("kprobe_events: p:{group}/{name} {function}: {e}"));
        probe
    }

    /// The probe's `(hits, missed)` from `kprobe_profile`: every hit, by any
    /// task, and the hits the kernel could not record (a probe handler
    /// already running on that CPU).
    pub fn profile(&self) -> (u64, u64) {
        let text = std::fs::read_to_string(root().join("kprobe_profile")).expect("read kprobe_profile");
        // `NAME` alone (6.1, 6.12) or `GROUP/NAME`.
        let name = format!("{}/{}", self.group, self.name);
        text.lines()
            .find_map(|l| {
                let mut words = l.split_whitespace();
                let first = words.next();
                (first == Some(name.as_str()) || first == Some(self.name.as_str()))
                    .then(|| Some((words.next()?.parse().ok()?, words.next()?.parse().ok()?)))?
            })
            .unwrap_or_else(|| panic!("{name} not in kprobe_profile:\n{text}"))
    }
}

impl Drop for KprobeEvent {
    fn drop(&mut self) {
        let _ = append_kprobe_events(&format!("-:{}/{}", self.group, self.name));
    }
}

fn append_kprobe_events(line: &str) -> std::io::Result<()> {
    append_probe_events("kprobe_events", line)
}

fn append_probe_events(file: &str, line: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().append(true).open(root().join(file))?;
    f.write_all(format!("{line}\n").as_bytes())
}

/// A `uprobe_events` probe `p:GROUP/NAME PATH:0xOFFSET ARGS`: tracefs' own
/// record of the calls of a function of a binary (enable it in a
/// [`Recorder`] as `(GROUP, NAME)`). Removed on drop.
pub struct UprobeEvent {
    pub group: String,
    pub name: String,
}

impl UprobeEvent {
    /// `offset`: the function's file offset; `args`: fetch args such as `n=%bx:u64`.
    pub fn new(group: &str, name: &str, path: &std::path::Path, offset: u64, args: &str) -> UprobeEvent {
        let line = format!("p:{group}/{name} {}:{offset:#x} {args}", path.display());
        append_probe_events("uprobe_events", &line).unwrap_or_else(|e| panic!("uprobe_events: {line}: {e}"));
        UprobeEvent { group: group.into(), name: name.into() }
    }
}

impl Drop for UprobeEvent {
    fn drop(&mut self) {
        let _ = append_probe_events("uprobe_events", &format!("-:{}/{}", self.group, self.name));
    }
}

/// One line of a trace buffer: who ran (thread and, with `record-tgid`,
/// its process), and which event.
#[derive(Debug, Clone)]
pub struct TraceLine {
    pub tid: u32,
    pub tgid: Option<u32>,
    pub event: String,
    pub text: String,
}

/// `          dd-1234    [001] d..1.   12.345678: over_high: (...)`, or with
/// `record-tgid`: `   gofixture-1236    (   1234) [001] ...` (`(-------)`
/// when the kernel did not record the thread's process).
pub fn parse_line(line: &str) -> Option<TraceLine> {
    let (task, rest) = line.split_once(" [")?;
    let (task, tgid) = match task.split_once(" (") {
        Some((task, tgid)) => (task, tgid.trim_end().trim_end_matches(')').trim().parse().ok()),
        None => (task, None),
    };
    let tid = task.trim().rsplit_once('-')?.1.parse().ok()?;
    let mut words = rest.split_whitespace().skip_while(|w| !w.ends_with(':'));
    let _timestamp = words.next()?;
    let event = words.next()?.trim_end_matches(':').to_string();
    Some(TraceLine { tid, tgid, event, text: line.to_string() })
}

/// A private instance recording several events at once, with a buffer large
/// enough for a test's workload and each thread's process (`record-tgid`:
/// a Go program runs on several threads); checks on stop that nothing was
/// overwritten. One clock for all CPUs (`global`), so that lines of
/// different CPUs, and the test's own markers, come in the order they
/// happened.
pub struct Recorder {
    dir: PathBuf,
    events: Vec<PathBuf>,
}

impl Recorder {
    pub fn new(tag: &str, events: &[(&str, &str)], buffer_kb: u32) -> Recorder {
        let dir = root().join("instances").join(format!("obs-{}-{tag}", std::process::id()));
        std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        let recorder =
            Recorder { events: events.iter().map(|(c, n)| dir.join("events").join(c).join(n)).collect(), dir };
        std::fs::write(recorder.dir.join("buffer_size_kb"), buffer_kb.to_string()).expect("buffer_size_kb");
        std::fs::write(recorder.dir.join("options/record-tgid"), "1").expect("options/record-tgid");
        std::fs::write(recorder.dir.join("trace_clock"), "global").expect("trace_clock");
        for e in &recorder.events {
            std::fs::write(e.join("enable"), "1").unwrap_or_else(|err| panic!("enable {}: {err}", e.display()));
        }
        recorder
    }

    /// Writes `text` into the recording (a `tracing_mark_write` line), between
    /// what happened before this call and what happens after it.
    pub fn mark(&self, text: &str) {
        std::fs::write(self.dir.join("trace_marker"), text).expect("write trace_marker");
    }

    /// The instance's `trace_marker`, for a process of the test's that marks
    /// its own steps (a shell writing to it before it execs).
    pub fn marker_path(&self) -> PathBuf {
        self.dir.join("trace_marker")
    }

    /// Stops recording; every recorded line. Panics when the buffer overran.
    pub fn stop(&self) -> Vec<TraceLine> {
        for e in &self.events {
            let _ = std::fs::write(e.join("enable"), "0");
        }
        let cpus = std::fs::read_dir(self.dir.join("per_cpu")).expect("per_cpu").flatten();
        for cpu in cpus {
            let stats = std::fs::read_to_string(cpu.path().join("stats")).unwrap_or_default();
            let overrun = stats.lines().find_map(|l| l.strip_prefix("overrun: ")).unwrap_or("0").trim();
            assert_eq!(overrun, "0", "trace buffer of {} overran: {stats}", cpu.path().display());
        }
        let text = std::fs::read_to_string(self.dir.join("trace")).expect("read the instance's trace");
        text.lines().filter(|l| !l.starts_with('#')).filter_map(parse_line).collect()
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        for e in &self.events {
            let _ = std::fs::write(e.join("enable"), "0");
        }
        let _ = std::fs::remove_dir(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::parse_line;

    #[test]
    fn parses_trace_lines() {
        let l = parse_line(
            "              dd-4242    [001] d..1.  1234.567890: over_high: (mem_cgroup_handle_over_high+0x0/0x60)",
        )
        .unwrap();
        assert_eq!((l.tid, l.tgid, l.event.as_str()), (4242, None, "over_high"));
        let l = parse_line(" kworker/u4:1-12 [000] .....   5.000001: mm_vmscan_memcg_reclaim_end: nr_reclaimed=32")
            .unwrap();
        assert_eq!((l.tid, l.event.as_str()), (12, "mm_vmscan_memcg_reclaim_end"));
        let l = parse_line(
            "   gofixture-1236    (   1234) [001] d..1.  12.5: over_high: (mem_cgroup_handle_over_high+0x0/0x60)",
        )
        .unwrap();
        assert_eq!((l.tid, l.tgid, l.event.as_str()), (1236, Some(1234), "over_high"));
        let l = parse_line("   gofixture-1236    (-------) [001] d..1.  12.5: over_high: (x)").unwrap();
        assert_eq!((l.tid, l.tgid), (1236, None));
    }
}
