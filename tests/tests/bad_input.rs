//! The agent's answers to bad input: unknown flags and values (exit 2), no
//! privileges and an output directory it cannot write (exit 1). Each answer is
//! a clear stderr line, never a panic, and nothing gets attached.

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use observer_e2e::command::output_within;
use observer_e2e::require::{require_bin, require_root_and_bin};
use rstest::rstest;

#[rstest]
#[case::run_unknown_flag(&["run", "--no-such-flag"], "--no-such-flag")]
#[case::check_unknown_flag(&["check", "--bogus"], "--bogus")]
#[case::duration_banana(&["run", "--output-dir", "/tmp", "--duration", "banana"], "banana")]
#[case::listen_not_an_address(&["run", "--output-dir", "/tmp", "--listen", "localhost"], "localhost")]
fn bad_usage_exits_2_naming_it(#[case] args: &[&str], #[case] named: &str) {
    let Some(bin) = require_bin() else { return };
    let out = observer(Command::new(&bin).args(args));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {}\nstderr:\n{err}", out.status);
    let naming: Vec<_> = err.lines().filter(|l| l.contains(named)).collect();
    assert_eq!(naming.len(), 1, "{args:?}: want one error line naming {named:?}; stderr:\n{err}");
    assert_sane(&err);
}

/// `--listen` on an address another process holds: one line naming it,
/// exit 1, nothing attached.
#[test]
fn busy_listen_address_exits_1_before_attaching() {
    let Some(bin) = require_root_and_bin() else { return };
    let holder = std::net::TcpListener::bind("127.0.0.1:0").expect("a loopback listener");
    let addr = holder.local_addr().unwrap().to_string();
    let tmp = tempfile::tempdir().unwrap();
    let out = observer(Command::new(&bin).arg("run").arg("--output-dir").arg(tmp.path()).args(["--listen", &addr]));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{}\nstderr:\n{err}", out.status);
    assert_eq!(err.lines().filter(|l| l.contains(&addr)).count(), 1, "one line names {addr}; stderr:\n{err}");
    assert!(!err.contains("observer: ready"), "attached despite the busy address; stderr:\n{err}");
    assert_sane(&err);
}

#[rstest]
#[case::under_a_regular_file(true)]
#[case::a_regular_file(false)]
fn unwritable_output_dir_exits_1_before_attaching(#[case] below_file: bool) {
    let Some(bin) = require_root_and_bin() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("not-a-dir");
    std::fs::write(&file, "").unwrap();
    // Root may write anywhere else, so a path the kernel itself refuses.
    let dir = if below_file { file.join("out") } else { file };
    let out = observer(Command::new(&bin).arg("run").arg("--output-dir").arg(&dir).args(["--duration", "5s"]));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{}\nstderr:\n{err}", out.status);
    let shown = dir.display().to_string();
    assert!(err.lines().any(|l| l.contains(&shown)), "no line names {shown}; stderr:\n{err}");
    assert!(!err.contains("observer: ready"), "attached despite the bad directory; stderr:\n{err}");
    assert_sane(&err);
}

#[test]
fn unprivileged_user_exits_1_naming_the_capability() {
    // Root is needed to become `nobody` (65534).
    let Some(bin) = require_root_and_bin() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    // A copy that `nobody` can reach and run, whatever the original's path.
    let bin = copy_for_everyone(&bin, tmp.path());
    // A directory `nobody` can write, so only the missing privileges fail.
    let out_dir = tmp.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    std::fs::set_permissions(&out_dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = observer(
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(&bin)
            .arg("run")
            .arg("--output-dir")
            .arg(&out_dir)
            .args(["--duration", "5s"]),
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{}\nstderr:\n{err}", out.status);
    assert!(err.lines().any(|l| l.contains("CAP_BPF")), "no line names CAP_BPF; stderr:\n{err}");
    assert!(!err.contains("observer: ready"), "attached without privileges; stderr:\n{err}");
    assert_sane(&err);
}

/// Runs the agent, bounded: a wrongly accepted command would run until killed.
fn observer(cmd: &mut Command) -> Output {
    output_within(cmd, Duration::from_secs(30))
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// No panic and no raw Rust debug output instead of a message.
fn assert_sane(err: &str) {
    assert!(!err.contains("panicked"), "the agent panicked:\n{err}");
    assert!(!err.contains("RUST_BACKTRACE"), "the agent panicked:\n{err}");
}

/// Copies `bin` into `dir`, both readable and runnable by any user.
fn copy_for_everyone(bin: &Path, dir: &Path) -> PathBuf {
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let copy = dir.join(bin.file_name().unwrap_or(OsStr::new("observer")));
    std::fs::copy(bin, &copy).unwrap();
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
    copy
}
