//! Drawing one frame (ratatui): the title line, the workload table, the
//! episode list, the agent's status and the keys; or an episode's detail.
//! Every text a workload chose reaches here escaped (`printable`).

use ratatui::{
    Frame,
    layout::{Constraint, Layout, Rect},
    style::{Color, Modifier, Style},
    text::Line,
    widgets::{Paragraph, Row as TableRow, Table},
};

use super::{
    columns::Column,
    keys::{Focus, Ui},
    model::{Row, Snapshot},
    timeline::Summary,
};

pub const KEYS_HELP: &str = "q quit  s/S sort  r reverse  / filter  p pause  Tab workloads/episodes  \u{2191}\u{2193} select  Enter detail  Esc back";

/// Colours unless `NO_COLOR` is set; emphasis (bold, reverse) either way.
#[derive(Clone, Copy, Debug)]
pub struct Theme {
    pub color: bool,
}

impl Theme {
    pub fn from_env() -> Theme {
        Theme { color: std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) }
    }

    fn fg(self, c: Color) -> Style {
        if self.color { Style::new().fg(c) } else { Style::new() }
    }

    pub fn header(self) -> Style {
        self.fg(Color::Cyan).add_modifier(Modifier::BOLD)
    }

    /// A workload with an open episode.
    pub fn lit(self) -> Style {
        self.fg(Color::Yellow).add_modifier(Modifier::BOLD)
    }

    pub fn selected(self) -> Style {
        Style::new().add_modifier(Modifier::REVERSED)
    }

    fn dim(self) -> Style {
        self.fg(Color::DarkGray)
    }
}

/// What one frame shows.
pub struct Screen<'a> {
    pub snapshot: &'a Snapshot,
    pub ui: &'a Ui,
    pub rows: &'a [&'a Row],
    pub episodes: &'a [Summary],
    /// The open detail's lines.
    pub detail: Option<&'a [String]>,
    /// The agent's newest line of its own (held back while the view runs).
    pub message: Option<&'a str>,
    pub theme: Theme,
}

pub fn frame(f: &mut Frame, s: &Screen) {
    let area = f.area();
    let [title, body, status, message, help] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(4),
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Length(1),
    ])
    .areas(area);
    f.render_widget(Paragraph::new(title_line(s)).style(s.theme.header()), title);
    match s.detail {
        Some(lines) => detail(f, body, lines, s),
        None => {
            let [table, list] = Layout::vertical([Constraint::Percentage(55), Constraint::Percentage(45)]).areas(body);
            workloads(f, table, s);
            episodes(f, list, s);
        }
    }
    f.render_widget(Paragraph::new(format!("agent: {}", s.snapshot.status)), status);
    if let Some(m) = s.message {
        f.render_widget(Paragraph::new(m.to_string()).style(s.theme.dim()), message);
    }
    let help_text = match &s.ui.editing {
        Some(typed) => format!("filter (name:, ns:, kind: narrow it; Enter applies, Esc cancels): {typed}_"),
        None if s.detail.is_some() => {
            "Esc back  PgUp/PgDn \u{2191}\u{2193} \u{2190}\u{2192} scroll  q quit".to_string()
        }
        None => KEYS_HELP.to_string(),
    };
    f.render_widget(Paragraph::new(help_text).style(s.theme.dim()), help);
}

fn title_line(s: &Screen) -> String {
    let ui = s.ui;
    let mut t = format!(
        "observer  workloads {}/{}  open episodes {}  sort {} {}",
        s.rows.len(),
        s.snapshot.rows.len(),
        s.snapshot.open.len(),
        ui.sort.header(),
        if ui.descending { "desc" } else { "asc" }
    );
    if !ui.filter_text.is_empty() {
        t += &format!("  filter \"{}\"", crate::export::live::printable(&ui.filter_text));
    }
    if s.snapshot.rows_evicted > 0 {
        t += &format!("  ({} quiet workloads made room)", s.snapshot.rows_evicted);
    }
    if ui.paused {
        t += "  [PAUSED]";
    }
    t
}

/// The rows around `selected` that fit in `height`.
fn window(len: usize, selected: usize, height: usize) -> std::ops::Range<usize> {
    if height == 0 || len <= height {
        return 0..len;
    }
    let start = selected.saturating_sub(height - 1).min(len - height);
    start..start + height
}

fn workloads(f: &mut Frame, area: Rect, s: &Screen) {
    let header = TableRow::new(Column::ALL.iter().map(|c| {
        let arrow = if *c == s.ui.sort { if s.ui.descending { "v" } else { "^" } } else { "" };
        format!("{}{arrow}", c.header())
    }))
    .style(s.theme.header());
    let focused = s.ui.focus == Focus::Workloads;
    let shown = window(s.rows.len(), s.ui.row, area.height.saturating_sub(1) as usize);
    let rows = s.rows[shown.clone()].iter().enumerate().map(|(i, row)| {
        let mut style = if row.open.is_some() { s.theme.lit() } else { Style::new() };
        if focused && shown.start + i == s.ui.row {
            style = style.patch(s.theme.selected());
        }
        TableRow::new(Column::ALL.iter().map(|c| c.cell(row, s.snapshot.interval))).style(style)
    });
    let widths = Column::ALL.map(|c| Constraint::Length(c.width()));
    f.render_widget(Table::new(rows, widths).header(header).column_spacing(1), area);
}

fn episodes(f: &mut Frame, area: Rect, s: &Screen) {
    let focused = s.ui.focus == Focus::Episodes;
    let mut lines = vec![
        Line::styled("EPISODES (open first, then closed; newest first)", s.theme.header()),
        Line::styled(Summary::header(), s.theme.header()),
    ];
    let shown = window(s.episodes.len(), s.ui.episode, area.height.saturating_sub(2) as usize);
    for (i, e) in s.episodes[shown.clone()].iter().enumerate() {
        let mut style = if e.closed_by == "open" { s.theme.lit() } else { Style::new() };
        if focused && shown.start + i == s.ui.episode {
            style = style.patch(s.theme.selected());
        }
        lines.push(Line::styled(e.line(), style));
    }
    if s.episodes.is_empty() {
        lines.push(Line::raw("  (none yet)"));
    }
    f.render_widget(Paragraph::new(lines), area);
}

fn detail(f: &mut Frame, area: Rect, lines: &[String], s: &Screen) {
    let text: Vec<Line> = lines.iter().map(|l| Line::raw(l.clone())).collect();
    f.render_widget(Paragraph::new(text).scroll((s.ui.scroll, s.ui.hscroll)), area);
}

#[cfg(test)]
mod tests {
    use ratatui::{Terminal, backend::TestBackend};

    use super::*;
    use crate::{
        event::Direction,
        view::{
            columns::{self, Filter},
            model::{
                Model,
                tests::{attributed, reset},
            },
        },
        workload::WorkloadKey,
    };

    fn screen_text(theme: Theme) -> (String, ratatui::buffer::Buffer) {
        let mut m = Model::new();
        let key = WorkloadKey::Netns { netns: 9 };
        for _ in 0..3 {
            m.record(&attributed(key, "evil\u{1b}[2J", reset(Direction::Sent, None)));
        }
        let snapshot = m.snapshot();
        let ui = Ui::default();
        let rows = columns::rows(&snapshot, ui.sort, ui.descending, &Filter::default());
        let episodes = columns::episodes(&snapshot, &Filter::default());
        let mut t = Terminal::new(TestBackend::new(220, 20)).unwrap();
        let s = Screen {
            snapshot: &snapshot,
            ui: &ui,
            rows: &rows,
            episodes: &episodes,
            detail: None,
            message: Some("observer: go: attached pid=1"),
            theme,
        };
        t.draw(|f| frame(f, &s)).unwrap();
        let buf = t.backend().buffer().clone();
        let text: Vec<String> = (0..buf.area.height)
            .map(|y| (0..buf.area.width).map(|x| buf[(x, y)].symbol().to_string()).collect())
            .collect();
        (text.join("\n"), buf)
    }

    #[test]
    fn the_table_shows_rows_escaped_with_their_counts() {
        let (text, _) = screen_text(Theme { color: true });
        assert!(text.contains("WORKLOAD"), "{text}");
        let row = text.lines().find(|l| l.contains("evil")).unwrap();
        assert!(row.contains("evil\\u{1b}[2J"), "{row}");
        assert!(row.split_whitespace().any(|w| w == "3"), "{row}");
        assert!(text.contains("attached pid=1") && text.contains("q quit"), "{text}");
    }

    #[test]
    fn no_color_keeps_emphasis_only() {
        let (_, buf) = screen_text(Theme { color: false });
        for cell in buf.content() {
            assert_eq!(cell.fg, Color::Reset, "a colour with NO_COLOR: {cell:?}");
        }
        let (_, buf) = screen_text(Theme { color: true });
        assert!(buf.content().iter().any(|c| c.fg != Color::Reset));
    }

    #[test]
    fn the_window_keeps_the_selection_in_view() {
        assert_eq!(window(3, 0, 10), 0..3);
        assert_eq!(window(20, 0, 5), 0..5);
        assert_eq!(window(20, 7, 5), 3..8);
        assert_eq!(window(20, 19, 5), 15..20);
    }
}
