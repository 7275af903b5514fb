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
        let dir = root()
            .join("instances")
            .join(format!("obs-{}-{tag}", std::process::id()));
        std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        let event = dir.join("events").join(category).join(name);
        let instance = TraceInstance { dir, event };
        std::fs::write(instance.event.join("filter"), filter)
            .unwrap_or_else(|e| panic!("filter {filter:?}: {e}"));
        std::fs::write(instance.event.join("enable"), "1").expect("enable the event");
        instance
    }

    /// Stops recording and returns the recorded event lines.
    pub fn stop(&self) -> Vec<String> {
        std::fs::write(self.event.join("enable"), "0").expect("disable the event");
        let text =
            std::fs::read_to_string(self.dir.join("trace")).expect("read the instance's trace");
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .map(str::to_string)
            .collect()
    }
}

impl Drop for TraceInstance {
    fn drop(&mut self) {
        let _ = std::fs::write(self.event.join("enable"), "0");
        // An instance directory is removed with rmdir, whatever it holds.
        let _ = std::fs::remove_dir(&self.dir);
    }
}
