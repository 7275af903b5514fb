//! `observer episodes`: the episodes a run wrote to its data directory
//! (`<dir>/traces.jsonl`), newest first, filtered; `observer episodes show
//! ID` prints one's timeline as the live view's detail does. Reads a file,
//! nothing else: no root needed, and a copy of the directory taken from
//! another machine will do.

use std::{
    io::BufRead,
    path::{Path, PathBuf},
};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;

use super::timeline::{self, Stored, Summary};
use crate::{
    config::{DEFAULT_OUTPUT_DIR, EpisodesAction, EpisodesArgs},
    export::otlp::file::FILE_NAME,
};

#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("--dir {0}: no such directory")]
    NoDir(PathBuf),
    #[error("{dir} has no {FILE_NAME}: not a data directory `observer run --output-dir` wrote")]
    NoFile { dir: PathBuf },
    #[error("cannot read {path}: {error}")]
    Read { path: PathBuf, error: std::io::Error },
    #[error("no episode {id} in {path} (`observer episodes` lists their ids)")]
    Unknown { id: String, path: PathBuf },
    #[error("{count} episodes in {path} have an id starting with {id}: give more of it")]
    Ambiguous { id: String, count: usize, path: PathBuf },
    #[error("`{0}` is not an episode id (hex digits, as `observer episodes` lists them)")]
    BadId(String),
}

/// What a command prints: its output, and a note for stderr.
pub struct Printed {
    pub stdout: String,
    pub note: Option<String>,
}

pub fn run(args: &EpisodesArgs) -> Result<Printed, HistoryError> {
    let dir = args.dir.clone().unwrap_or_else(|| DEFAULT_OUTPUT_DIR.into());
    let (path, mut episodes, bad) = load(&dir)?;
    let note = (bad > 0).then(|| format!("observer: {bad} lines of {} are not OTLP JSON; left out", path.display()));
    // Newest first.
    episodes.sort_by(|a, b| {
        (b.root.start_time_unix_nano, b.root.end_time_unix_nano)
            .cmp(&(a.root.start_time_unix_nano, a.root.end_time_unix_nano))
    });
    let stdout = match &args.action {
        Some(EpisodesAction::Show { id }) => {
            let e = find(&episodes, id, &path)?;
            timeline::render(e, &path).join("\n") + "\n"
        }
        None => list(&episodes, args, &path),
    };
    Ok(Printed { stdout, note })
}

fn list(episodes: &[Stored], args: &EpisodesArgs, path: &Path) -> String {
    let contains = |have: &str, want: &Option<String>| {
        want.as_ref().is_none_or(|w| have.to_lowercase().contains(&w.to_lowercase()))
    };
    let shown: Vec<Summary> = episodes
        .iter()
        .map(Stored::summary)
        .filter(|s| args.kind.as_ref().is_none_or(|k| s.kind == *k))
        .filter(|s| contains(&s.workload, &args.name))
        .filter(|s| args.namespace.is_none() || contains(s.namespace.as_deref().unwrap_or("\0"), &args.namespace))
        .take(args.limit.unwrap_or(usize::MAX))
        .collect();
    if shown.is_empty() {
        let filtered = if episodes.is_empty() { "" } else { " matching the filters" };
        return format!("no episodes{filtered} in {} ({} in all)\n", path.display(), episodes.len());
    }
    let mut out = Summary::header() + "\n";
    for s in &shown {
        out += &s.line();
        out.push('\n');
    }
    out
}

fn find<'a>(episodes: &'a [Stored], id: &str, path: &Path) -> Result<&'a Stored, HistoryError> {
    let want = id.trim().to_lowercase();
    if want.is_empty() || !want.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(HistoryError::BadId(crate::export::live::printable(id)));
    }
    let matching: Vec<&Stored> = episodes.iter().filter(|e| e.id().starts_with(&want)).collect();
    match matching.as_slice() {
        [one] => Ok(one),
        [] => Err(HistoryError::Unknown { id: want, path: path.to_path_buf() }),
        more => Err(HistoryError::Ambiguous { id: want, count: more.len(), path: path.to_path_buf() }),
    }
}

/// Every episode in `dir`'s `traces.jsonl` (and the segments rotated from
/// it, oldest first), and how many lines were not OTLP JSON (a line the
/// agent was writing when the copy was taken).
fn load(dir: &Path) -> Result<(PathBuf, Vec<Stored>, usize), HistoryError> {
    if !dir.is_dir() {
        return Err(HistoryError::NoDir(dir.to_path_buf()));
    }
    let path = dir.join(FILE_NAME);
    let files = crate::export::disk::segments(dir, FILE_NAME);
    if files.is_empty() {
        return Err(HistoryError::NoFile { dir: dir.to_path_buf() });
    }
    let mut episodes = Vec::new();
    let mut bad = 0;
    for file_path in files {
        let file = match std::fs::File::open(&file_path) {
            Ok(f) => f,
            // Rotated away between the listing and now.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(error) => return Err(HistoryError::Read { path: file_path, error }),
        };
        for line in std::io::BufReader::new(file).lines() {
            let line = line.map_err(|error| HistoryError::Read { path: file_path.clone(), error })?;
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str::<ExportTraceServiceRequest>(&line) {
                Ok(request) => episodes.extend(Stored::from_request(request)),
                Err(_) => bad += 1,
            }
        }
    }
    Ok((path, episodes, bad))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        config::{Cli, Command},
        correlate::episode::{CloseReason, EpisodeKind},
        export::otlp::{NodeResource, file::TracesFile, spans::episode_batch, testdata},
    };
    use clap::Parser;

    fn args(argv: &[&str]) -> EpisodesArgs {
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Episodes(a) => a,
            _ => unreachable!(),
        }
    }

    /// Three episodes: the fixture's, a reset burst of "shop" an hour later,
    /// and one a minute after that; plus a half-written line.
    fn dir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let mut file =
            TracesFile::open(&crate::export::disk::Disk::new(dir.path(), crate::export::disk::DEFAULT_BUDGET)).unwrap();
        for (i, (kind, name)) in [
            (EpisodeKind::MemoryPressure, "checkout"),
            (EpisodeKind::TcpResetBurst, "shop"),
            (EpisodeKind::TcpResetBurst, "shop"),
        ]
        .into_iter()
        .enumerate()
        {
            let mut e = testdata::episode_with_every_child();
            e.kind = kind;
            e.root.trace_id = [0x10 * (i as u8 + 1); 16];
            e.start_unix_nano += i as u64 * 3_600_000_000_000;
            e.end_unix_nano += i as u64 * 3_600_000_000_000;
            e.closed_by = CloseReason::Quiet;
            let mut w = (*e.workload).clone();
            w.service_name = name.into();
            e.workload = std::sync::Arc::new(w);
            let (resource, spans) = episode_batch(&e, &NodeResource::default());
            file.append(&resource, spans).unwrap();
        }
        std::fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join(FILE_NAME))
            .and_then(|mut f| std::io::Write::write_all(&mut f, b"{\"resourceSpans\": [{\"reso"))
            .unwrap();
        dir
    }

    fn ids(out: &str) -> Vec<String> {
        out.lines().skip(1).map(|l| l.split_whitespace().next().unwrap().to_string()).collect()
    }

    #[test]
    fn lists_newest_first_with_filters() {
        let d = dir();
        let p = d.path().to_str().unwrap();
        let all = run(&args(&["observer", "episodes", "--dir", p])).unwrap();
        assert_eq!(ids(&all.stdout), ["30".repeat(8), "20".repeat(8), "10".repeat(8)], "{}", all.stdout);
        assert!(all.note.unwrap().contains("1 lines"), "the cut-off line is counted");
        let kind = run(&args(&["observer", "episodes", "--dir", p, "--kind", "memory.pressure"])).unwrap();
        assert_eq!(ids(&kind.stdout), ["10".repeat(8)]);
        let name = run(&args(&["observer", "episodes", "--dir", p, "--name", "SHOP", "--limit", "1"])).unwrap();
        assert_eq!(ids(&name.stdout), ["30".repeat(8)]);
        let ns = run(&args(&["observer", "episodes", "--dir", p, "--namespace", "prod"])).unwrap();
        assert!(ns.stdout.starts_with("no episodes matching the filters"), "{}", ns.stdout);
    }

    #[test]
    fn rotated_segments_are_read_too() {
        let d = dir();
        let p = d.path().to_str().unwrap();
        let before = run(&args(&["observer", "episodes", "--dir", p])).unwrap().stdout;
        // The first episode in a segment the agent rotated, the rest current.
        let text = std::fs::read_to_string(d.path().join(FILE_NAME)).unwrap();
        let (first, rest) = text.split_once('\n').unwrap();
        std::fs::write(d.path().join(format!("{FILE_NAME}.7")), format!("{first}\n")).unwrap();
        std::fs::write(d.path().join(FILE_NAME), rest).unwrap();
        assert_eq!(run(&args(&["observer", "episodes", "--dir", p])).unwrap().stdout, before);
    }

    #[test]
    fn shows_one_by_a_prefix_of_its_id() {
        let d = dir();
        let p = d.path().to_str().unwrap();
        let out = run(&args(&["observer", "episodes", "show", "2020", "--dir", p])).unwrap().stdout;
        let stored = load(d.path()).unwrap().1.into_iter().find(|e| e.id().starts_with("2020")).unwrap();
        assert_eq!(out, timeline::render(&stored, &d.path().join(FILE_NAME)).join("\n") + "\n");
        assert!(out.starts_with(&format!("episode {} tcp.reset.burst of shop", "20".repeat(16))), "{out}");
    }

    #[test]
    fn bad_input_is_one_clear_error() {
        let d = dir();
        let p = d.path().to_str().unwrap();
        let err = |argv: &[&str]| run(&args(argv)).err().unwrap().to_string();
        assert!(err(&["observer", "episodes", "show", "9999", "--dir", p]).starts_with("no episode 9999 in"));
        assert!(err(&["observer", "episodes", "show", "zz", "--dir", p]).contains("not an episode id"));
        let empty = tempfile::tempdir().unwrap();
        assert!(
            err(&["observer", "episodes", "--dir", empty.path().to_str().unwrap()]).contains("has no traces.jsonl")
        );
        assert!(err(&["observer", "episodes", "--dir", "/nonexistent/x"]).contains("no such directory"));
        std::fs::write(empty.path().join(FILE_NAME), "").unwrap();
        let none = run(&args(&["observer", "episodes", "--dir", empty.path().to_str().unwrap()])).unwrap();
        assert!(none.stdout.starts_with("no episodes in"), "{}", none.stdout);
    }
}
