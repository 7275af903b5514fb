//! Running external commands (echoed, with `~/.cargo/bin` on PATH) and timing steps.

use std::{
    ffi::OsStr,
    fmt::Write as _,
    io,
    os::unix::process::CommandExt as _,
    path::Path,
    process::{Command, Output},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, anyhow, bail};

use crate::host;

/// A command to run, and the shell line it stands for (echoed before it runs).
pub struct Cmd {
    command: Command,
    /// `KEY=value ` assignments set through [`Cmd::env`], in order.
    env_line: String,
    /// The program and its arguments.
    line: String,
}

impl Cmd {
    /// `program`, with PATH set to [`host::child_path`] and no other change.
    pub fn new(program: impl AsRef<OsStr>) -> Self {
        let program = program.as_ref();
        let mut command = Command::new(program);
        command.env("PATH", host::child_path());
        Self { command, env_line: String::new(), line: quote(program) }
    }

    /// `cargo` (the one running this xtask), in the workspace root.
    pub fn cargo() -> Self {
        let mut cmd = Self::new(host::cargo());
        cmd.line = "cargo".into();
        cmd.command.current_dir(host::workspace_root());
        cmd
    }

    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        let _ = write!(self.line, " {}", quote(arg.as_ref()));
        self.command.arg(arg);
        self
    }

    pub fn args<I, S>(self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        args.into_iter().fold(self, Self::arg)
    }

    /// Sets an environment variable for the child; it is echoed before the command.
    pub fn env(mut self, key: &str, value: impl AsRef<OsStr>) -> Self {
        let value = value.as_ref();
        let _ = write!(self.env_line, "{key}={} ", quote(value));
        self.command.env(key, value);
        self
    }

    /// Runs the child in `dir` (echoed as `cd DIR && `).
    pub fn current_dir(mut self, dir: &Path) -> Self {
        self.env_line.insert_str(0, &format!("cd {} && ", quote(dir.as_os_str())));
        self.command.current_dir(dir);
        self
    }

    /// Puts `dir` first on the child's PATH (echoed as `PATH=dir:$PATH`).
    pub fn path_prepend(mut self, dir: &Path) -> Self {
        let current = host::child_path();
        let mut dirs = vec![dir.to_path_buf()];
        dirs.extend(std::env::split_paths(&current));
        let path = std::env::join_paths(dirs).unwrap_or(current);
        let _ = write!(self.env_line, "PATH={}:$PATH ", quote(dir.as_os_str()));
        self.command.env("PATH", path);
        self
    }

    /// The shell line: environment assignments, program, arguments.
    fn shown(&self) -> String {
        format!("{}{}", self.env_line, self.line)
    }

    /// Runs with inherited stdio after echoing the line; fails on a non-zero exit.
    pub fn run(mut self) -> Result<()> {
        eprintln!("    $ {}", self.shown());
        let status = self.command.status().with_context(|| format!("cannot start `{}`", self.shown()))?;
        if !status.success() {
            bail!("`{}` failed ({status})", self.shown());
        }
        Ok(())
    }

    /// Runs quietly and captures its output, whatever the exit status.
    /// `Ok(None)` when the program does not exist.
    pub fn probe(mut self) -> Result<Option<Output>> {
        match self.command.output() {
            Ok(output) => Ok(Some(output)),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(anyhow!(err).context(format!("cannot start `{}`", self.shown()))),
        }
    }

    /// Replaces this process with the command (signals then reach it directly).
    /// Returns only when that fails.
    pub fn exec(mut self) -> anyhow::Error {
        eprintln!("    $ {}", self.shown());
        let err = self.command.exec();
        anyhow!(err).context(format!("cannot run `{}`", self.shown()))
    }
}

/// Runs `f` as one named step: prints its name, then its outcome and duration.
/// `f` returns a short description of what it did ("already installed", …).
pub fn step(name: &str, f: impl FnOnce() -> Result<String>) -> Result<()> {
    eprintln!("==> {name}");
    let start = Instant::now();
    let result = f();
    let took = secs(start.elapsed());
    match &result {
        Ok(outcome) => eprintln!("==> {name}: {outcome} ({took})"),
        Err(_) => eprintln!("==> {name}: FAILED after {took}"),
    }
    result.map(|_| ())
}

/// A duration as `42.1s`.
pub fn secs(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

/// Shell-quotes a word for display when it needs it.
fn quote(word: &OsStr) -> String {
    let s = word.to_string_lossy();
    let plain = !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:+,@%".contains(c));
    if plain { s.into_owned() } else { format!("'{}'", s.replace('\'', r"'\''")) }
}
