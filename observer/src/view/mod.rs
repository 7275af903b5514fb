//! What a person sees: the live view of `observer run` on a terminal (a
//! top-like table of workloads and the episodes as they open and close) and
//! `observer episodes` afterwards. An export concern: it reads what the
//! pipeline already made (attributed records, the engine's open and closed
//! episodes), never feeds anything back.
//!
//! - `model`: pure rows and episode list, fed by the agent's loop (cheap
//!   updates), copied into snapshots;
//! - `columns`: the table's columns, sorting and the filter;
//! - `keys`: the view's state and what each key does;
//! - `draw`: one frame with ratatui;
//! - `terminal`: the thread that owns the terminal and draws at ~4 fps;
//! - `timeline`: an episode as text (the detail, `episodes show`) and its
//!   one-line summary (the list, `observer episodes`);
//! - `history`: `observer episodes [show ID]` over a data directory;
//! - `console`: the agent's own stderr lines, held back while the view owns
//!   the terminal.
//!
//! Without a terminal (or with `--output plain`) `export::live` prints lines.

pub mod columns;
pub mod console;
pub mod draw;
pub mod history;
pub mod keys;
pub mod model;
pub mod terminal;
pub mod timeline;
