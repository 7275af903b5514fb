//! The terminal thread: owns the terminal while the live view runs (raw
//! mode, the alternate screen), reads keys, and draws about four frames a
//! second from the newest [`Snapshot`] the agent left in a one-place slot.
//! The agent only ever `try_lock`s that slot: it never waits for the
//! terminal, and a slow terminal loses frames, not events. The terminal is
//! given back as it was on quit, on stop and on a panic.

use std::{
    io::Write,
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use crossterm::{
    cursor,
    event::{self, Event, KeyEventKind},
    execute,
    terminal::{self, EnterAlternateScreen, LeaveAlternateScreen},
};
use ratatui::backend::CrosstermBackend;

use super::{
    columns, console,
    draw::{self, Screen, Theme},
    keys::{Detail, Ui},
    model::{Row, Snapshot},
    timeline::{self, Stored, Summary},
};
use crate::{export::otlp::NodeResource, workload::Identity};

/// Between frames.
const FRAME: Duration = Duration::from_millis(250);

type Slot = Arc<Mutex<Option<Arc<Snapshot>>>>;

/// The agent's end: where it leaves snapshots.
pub struct Feed {
    slot: Slot,
}

impl Feed {
    /// Leaves `snapshot` for the next frame; skipped (a lost frame) in the
    /// instant the terminal thread is taking the previous one.
    pub fn publish(&self, snapshot: Snapshot) {
        if let Ok(mut slot) = self.slot.try_lock() {
            *slot = Some(Arc::new(snapshot));
        }
    }
}

pub struct Terminal {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// Where the detail finds files, and whom to tell about `q`.
pub struct Settings {
    pub node: NodeResource,
    pub trace_file: PathBuf,
    pub on_quit: Box<dyn Fn() + Send>,
}

impl Terminal {
    /// Takes the terminal (stdout) and starts drawing.
    pub fn start(settings: Settings) -> std::io::Result<(Terminal, Feed)> {
        terminal::enable_raw_mode()?;
        if let Err(e) = execute!(std::io::stdout(), EnterAlternateScreen, cursor::Hide) {
            restore();
            return Err(e);
        }
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore();
            previous(info);
        }));
        console::hold();
        let slot: Slot = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (slot.clone(), stop.clone());
        let thread = std::thread::Builder::new().name("observer-view".into()).spawn(move || {
            if let Err(e) = draw_loop(&s, &st, &settings) {
                console::line(&format!("observer: the live view stopped drawing: {e}"));
            }
            restore();
        });
        let thread = match thread {
            Ok(t) => t,
            Err(e) => {
                restore();
                console::release();
                return Err(e);
            }
        };
        Ok((Terminal { stop, thread: Some(thread) }, Feed { slot }))
    }

    /// Gives the terminal back and prints the agent's lines held meanwhile.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        restore();
        console::release();
    }
}

/// The terminal as it was: cooked mode, main screen, cursor shown.
fn restore() {
    let _ = terminal::disable_raw_mode();
    let _ = execute!(std::io::stdout(), LeaveAlternateScreen, cursor::Show);
    let _ = std::io::stdout().flush();
}

fn draw_loop(slot: &Slot, stop: &AtomicBool, settings: &Settings) -> std::io::Result<()> {
    let mut term = ratatui::Terminal::new(CrosstermBackend::new(std::io::stdout()))?;
    term.clear()?;
    let theme = Theme::from_env();
    let mut ui = Ui::default();
    let mut snapshot = Arc::new(Snapshot::default());
    let mut detail = DetailCache::default();
    let (mut rows_shown, mut episodes_shown) = (0, 0);
    let mut quit_told = false;
    let mut next = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let mut dirty = false;
        let wait = next.saturating_duration_since(Instant::now()).min(Duration::from_millis(100));
        if event::poll(wait)? {
            match event::read()? {
                Event::Key(k) if k.kind == KeyEventKind::Press => {
                    ui.key(k, rows_shown, episodes_shown);
                    dirty = true;
                }
                Event::Resize(..) => dirty = true,
                _ => {}
            }
        }
        if ui.quit && !quit_told {
            (settings.on_quit)();
            quit_told = true;
        }
        if !dirty && Instant::now() < next {
            continue;
        }
        if !ui.paused
            && let Some(newer) = slot.lock().ok().and_then(|mut s| s.take())
        {
            snapshot = newer;
        }
        let rows = columns::rows(&snapshot, ui.sort, ui.descending, &ui.filter);
        let episodes = columns::episodes(&snapshot, &ui.filter);
        ui.clamp(rows.len(), episodes.len());
        (rows_shown, episodes_shown) = (rows.len(), episodes.len());
        let lines = match &ui.detail {
            Some(d) => Some(detail.lines(d, &rows, &episodes, &snapshot, settings)),
            None => {
                detail = DetailCache::default();
                None
            }
        };
        let message = if quit_told {
            Some("observer: stopping (closing open episodes, flushing exports)".to_string())
        } else {
            console::latest()
        };
        let screen = Screen {
            snapshot: &snapshot,
            ui: &ui,
            rows: &rows,
            episodes: &episodes,
            detail: lines.as_deref(),
            message: message.as_deref(),
            theme,
        };
        term.draw(|f| draw::frame(f, &screen))?;
        next = Instant::now() + FRAME;
    }
    Ok(())
}

/// The open detail: which episode (fixed when it opened) and its lines.
#[derive(Default)]
struct DetailCache {
    /// `None` until resolved; `Some(None)`: the workload has no episode.
    id: Option<Option<String>>,
    workload: Option<Arc<Identity>>,
    /// Lines of the closed episode (they do not change any more).
    closed: Option<Vec<String>>,
}

impl DetailCache {
    fn lines(
        &mut self,
        d: &Detail,
        rows: &[&Row],
        episodes: &[Summary],
        snapshot: &Snapshot,
        settings: &Settings,
    ) -> Vec<String> {
        if self.id.is_none() {
            self.id = Some(match d {
                Detail::Episode(i) => episodes.get(*i).map(|e| e.id.clone()),
                Detail::OfWorkload(i) => rows.get(*i).and_then(|row| {
                    self.workload = Some(row.identity.clone());
                    latest_of(&row.identity, snapshot)
                }),
            });
        }
        let Some(Some(id)) = &self.id else {
            let name = self.workload.as_ref().map(|w| crate::export::live::printable(&w.service_name));
            return vec![format!("no episode of {} yet", name.unwrap_or_default())];
        };
        if let Some(lines) = &self.closed {
            return lines.clone();
        }
        if let Some(e) = snapshot.closed.iter().find(|e| timeline::hex(&e.root.trace_id) == *id) {
            let lines = match Stored::from_episode(e, &settings.node) {
                Some(stored) => timeline::render(&stored, &settings.trace_file),
                None => vec![format!("episode {id}: nothing to show")],
            };
            self.closed = Some(lines.clone());
            return lines;
        }
        match snapshot.open.iter().find(|e| timeline::hex(&e.root.trace_id) == *id) {
            Some(open) => {
                let s = Summary::of_open(open);
                let counts: Vec<String> = s.counts.iter().map(|(k, n)| format!("{k}={n}")).collect();
                vec![
                    format!("episode {id} {} of {} (open)", s.kind, s.who()),
                    format!(
                        "  since {}, {} so far",
                        crate::kernel::clock::rfc3339(s.start_unix_nano),
                        timeline::seconds(s.end_unix_nano.saturating_sub(s.start_unix_nano))
                    ),
                    format!("  counts so far: {}", counts.join(" ")),
                    format!("  its timeline shows here when it closes (and goes to {})", settings.trace_file.display()),
                ]
            }
            None => vec![format!("episode {id} is no longer in the view's list")],
        }
    }
}

/// The id of the workload's newest episode: an open one, else the newest closed.
fn latest_of(w: &Identity, snapshot: &Snapshot) -> Option<String> {
    let same = |o: &Identity| (o.cgroup_id, o.pid, o.netns) == (w.cgroup_id, w.pid, w.netns);
    snapshot
        .open
        .iter()
        .filter(|e| same(&e.workload))
        .max_by_key(|e| e.start_unix_nano)
        .map(|e| e.root.trace_id)
        .or_else(|| snapshot.closed.iter().find(|e| same(&e.workload)).map(|e| e.root.trace_id))
        .map(|id| timeline::hex(&id))
}
