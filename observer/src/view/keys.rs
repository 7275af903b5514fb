//! What the keys do: the view's state (sort, filter, pause, focus,
//! selection, detail) and how a key changes it. Pure, tested without a
//! terminal.
//!
//! | key | does |
//! |---|---|
//! | `q`, `Ctrl-C` | quit (the agent stops as on SIGINT) |
//! | `s` / `S` (or `>` / `<`) | sort by the next / previous column |
//! | `r` | reverse the sort |
//! | `/` | filter: type text (`name:`, `ns:`, `kind:` narrow it), `Enter` applies, `Esc` cancels, `Ctrl-U` clears |
//! | `p` | pause / resume the screen (the agent keeps counting) |
//! | `Tab` | move between the workloads and the episodes |
//! | `↑` `↓` (`k` `j`) | select a row or an episode |
//! | `Enter` | open the selected episode's detail (a workload: its latest episode) |
//! | `Esc` | close the detail; clear the filter |
//! | `PgUp` `PgDn` `←` `→` | scroll the detail |

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use super::columns::{Column, Filter};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Focus {
    Workloads,
    Episodes,
}

/// What the detail shows: an episode by its id, or the latest of a workload's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Detail {
    /// From the workload table: its row's position then.
    OfWorkload(usize),
    /// From the episode list: its position then.
    Episode(usize),
}

#[derive(Clone, Debug)]
pub struct Ui {
    pub sort: Column,
    pub descending: bool,
    pub filter: Filter,
    /// The filter as typed (shown, and applied on `Enter`).
    pub filter_text: String,
    /// Typing a filter.
    pub editing: Option<String>,
    pub paused: bool,
    pub focus: Focus,
    pub row: usize,
    pub episode: usize,
    pub detail: Option<Detail>,
    pub scroll: u16,
    pub hscroll: u16,
    pub quit: bool,
}

impl Default for Ui {
    fn default() -> Self {
        Ui {
            sort: Column::Events,
            descending: true,
            filter: Filter::default(),
            filter_text: String::new(),
            editing: None,
            paused: false,
            focus: Focus::Workloads,
            row: 0,
            episode: 0,
            detail: None,
            scroll: 0,
            hscroll: 0,
            quit: false,
        }
    }
}

impl Ui {
    /// One key press. `rows` and `episodes`: how many are shown (to keep the
    /// selection on one).
    pub fn key(&mut self, key: KeyEvent, rows: usize, episodes: usize) {
        if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
            self.quit = true;
            return;
        }
        if let Some(typed) = self.editing.as_mut() {
            match key.code {
                KeyCode::Enter => {
                    self.filter_text = typed.clone();
                    self.filter = Filter::parse(typed);
                    self.editing = None;
                    (self.row, self.episode) = (0, 0);
                }
                KeyCode::Esc => self.editing = None,
                KeyCode::Backspace => {
                    typed.pop();
                }
                KeyCode::Char('u') if key.modifiers.contains(KeyModifiers::CONTROL) => typed.clear(),
                KeyCode::Char(c) if !c.is_control() && !key.modifiers.contains(KeyModifiers::CONTROL) => typed.push(c),
                _ => {}
            }
            return;
        }
        match key.code {
            KeyCode::Char('q') => self.quit = true,
            KeyCode::Esc if self.detail.is_some() => self.detail = None,
            KeyCode::Esc => {
                self.filter = Filter::default();
                self.filter_text.clear();
            }
            KeyCode::PageDown if self.detail.is_some() => self.scroll = self.scroll.saturating_add(10),
            KeyCode::PageUp if self.detail.is_some() => self.scroll = self.scroll.saturating_sub(10),
            KeyCode::Down | KeyCode::Char('j') if self.detail.is_some() => self.scroll = self.scroll.saturating_add(1),
            KeyCode::Up | KeyCode::Char('k') if self.detail.is_some() => self.scroll = self.scroll.saturating_sub(1),
            KeyCode::Right if self.detail.is_some() => self.hscroll = self.hscroll.saturating_add(20),
            KeyCode::Left if self.detail.is_some() => self.hscroll = self.hscroll.saturating_sub(20),
            _ if self.detail.is_some() => {}
            KeyCode::Char('/') => self.editing = Some(self.filter_text.clone()),
            KeyCode::Char('s') | KeyCode::Char('>') => self.sort_by(self.sort.next(1)),
            KeyCode::Char('S') | KeyCode::Char('<') => self.sort_by(self.sort.next(-1)),
            KeyCode::Char('r') => self.descending = !self.descending,
            KeyCode::Char('p') => self.paused = !self.paused,
            KeyCode::Tab | KeyCode::BackTab => {
                self.focus = match self.focus {
                    Focus::Workloads => Focus::Episodes,
                    Focus::Episodes => Focus::Workloads,
                }
            }
            KeyCode::Down | KeyCode::Char('j') => self.step(1, rows, episodes),
            KeyCode::Up | KeyCode::Char('k') => self.step(-1, rows, episodes),
            KeyCode::Enter => {
                (self.scroll, self.hscroll) = (0, 0);
                self.detail = match self.focus {
                    Focus::Workloads if rows > 0 => Some(Detail::OfWorkload(self.row)),
                    Focus::Episodes if episodes > 0 => Some(Detail::Episode(self.episode)),
                    _ => None,
                };
            }
            _ => {}
        }
    }

    fn sort_by(&mut self, column: Column) {
        self.sort = column;
        self.descending = column.descending_first();
    }

    fn step(&mut self, by: isize, rows: usize, episodes: usize) {
        let (at, len) = match self.focus {
            Focus::Workloads => (&mut self.row, rows),
            Focus::Episodes => (&mut self.episode, episodes),
        };
        *at = (*at as isize + by).clamp(0, len.saturating_sub(1) as isize) as usize;
    }

    /// Keeps the selection on a row that is shown.
    pub fn clamp(&mut self, rows: usize, episodes: usize) {
        self.row = self.row.min(rows.saturating_sub(1));
        self.episode = self.episode.min(episodes.saturating_sub(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn press(ui: &mut Ui, keys: &str) {
        for c in keys.chars() {
            let code = match c {
                '\n' => KeyCode::Enter,
                '\t' => KeyCode::Tab,
                '\u{1b}' => KeyCode::Esc,
                c => KeyCode::Char(c),
            };
            ui.key(KeyEvent::new(code, KeyModifiers::NONE), 5, 3);
        }
    }

    #[test]
    fn sort_filter_pause_select_detail_quit() {
        let mut ui = Ui::default();
        assert_eq!((ui.sort, ui.descending), (Column::Events, true));
        press(&mut ui, "s");
        assert_eq!((ui.sort, ui.descending), (Column::Gc, true));
        press(&mut ui, "SS");
        assert_eq!((ui.sort, ui.descending), (Column::Go, false), "text sorts A to Z");
        press(&mut ui, "r");
        assert!(ui.descending);
        press(&mut ui, "/kind:tcp\n");
        assert_eq!((ui.filter_text.as_str(), ui.editing.as_ref()), ("kind:tcp", None));
        assert_eq!(ui.filter, Filter::parse("kind:tcp"));
        press(&mut ui, "/x\u{1b}");
        ui.key(KeyEvent::new(KeyCode::Char('/'), KeyModifiers::NONE), 5, 3);
        ui.key(KeyEvent::new(KeyCode::Char('u'), KeyModifiers::CONTROL), 5, 3);
        assert_eq!(ui.editing.as_deref(), Some(""), "Ctrl-U clears what is typed");
        press(&mut ui, "\u{1b}");
        assert_eq!(ui.filter_text, "kind:tcp", "Esc cancels the edit");
        press(&mut ui, "/q");
        assert!(!ui.quit, "q while typing is text");
        press(&mut ui, "\u{1b}\u{1b}");
        assert_eq!(ui.filter, Filter::default(), "Esc clears the filter");
        press(&mut ui, "p");
        assert!(ui.paused);
        press(&mut ui, "jjjjjjj");
        assert_eq!(ui.row, 4, "stays on the last of 5 rows");
        press(&mut ui, "\tj\n");
        assert_eq!((ui.focus, ui.episode, ui.detail.clone()), (Focus::Episodes, 1, Some(Detail::Episode(1))));
        press(&mut ui, "s");
        assert_eq!(ui.sort, Column::Go, "keys other than scroll and Esc do nothing in the detail");
        press(&mut ui, "\u{1b}q");
        assert_eq!((ui.detail.clone(), ui.quit), (None, true));
        let mut ui = Ui::default();
        ui.key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL), 0, 0);
        assert!(ui.quit);
    }
}
