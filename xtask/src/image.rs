//! `cargo xtask image`: the agent's container image, built with podman from
//! the binary built here. deploy/Dockerfile's `build` stage is replaced by
//! a directory holding the same `/rootfs` (podman's `--build-context`), so
//! its final stage, `FROM scratch` plus that tree, is what both builds make.
//!
//! The tree: `/observer` (dynamically linked against glibc), exactly the
//! shared libraries `ldd` lists for it at the paths it lists, and the CA
//! bundle rustls-native-certs reads for OTLP over TLS.

use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, bail};

use crate::{
    build,
    cmd::{self, Cmd},
    host,
};

/// The CA bundle (Debian's ca-certificates), at the same path in the image.
const CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";
/// The agent's data directory (the chart mounts a volume there).
const DATA_DIR: &str = "var/lib/observer";

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The image's name.
    #[arg(long, default_value = "localhost/observer:latest")]
    tag: String,
    /// Only assemble the root file system into DIR from the release binary
    /// already built (deploy/Dockerfile's build stage runs this).
    #[arg(long, value_name = "DIR")]
    rootfs: Option<PathBuf>,
    /// podman storage of its own at DIR (vfs driver), instead of the default.
    #[arg(long, value_name = "DIR")]
    store: Option<PathBuf>,
}

pub fn run(args: &Args) -> Result<()> {
    if let Some(dir) = &args.rootfs {
        return cmd::step(&format!("image: root file system in {}", dir.display()), || {
            let files = assemble(&host::observer_bin(), dir)?;
            Ok(format!("{} files", files.len()))
        });
    }
    build::run()?;
    let context = host::target_dir().join("image");
    cmd::step("image: root file system", || {
        let files = assemble(&host::observer_bin(), &context.join("rootfs"))?;
        Ok(format!("{} files in {}", files.len(), context.display()))
    })?;
    cmd::step(&format!("image: podman build {}", args.tag), || {
        podman_build(&context, &args.tag, args.store.as_deref())?;
        Ok(args.tag.clone())
    })
}

/// `podman` with its storage at `store` (vfs: works wherever podman does),
/// else the user's default storage.
fn podman(store: Option<&Path>) -> Cmd {
    let cmd = Cmd::new("podman");
    match store {
        Some(dir) => cmd
            .arg("--root")
            .arg(dir.join("root"))
            .arg("--runroot")
            .arg(dir.join("run"))
            .args(["--storage-driver", "vfs"]),
        None => cmd,
    }
}

/// Builds deploy/Dockerfile's final stage with `context/rootfs` for the
/// build stage's `/rootfs` (the build stage itself is never run).
fn podman_build(context: &Path, tag: &str, store: Option<&Path>) -> Result<()> {
    let dockerfile = host::workspace_root().join("deploy/Dockerfile");
    fs::create_dir_all(context.join("empty"))?;
    podman(store)
        .args(["build", "--pull=never", "--tag", tag, "--file"])
        .arg(&dockerfile)
        .arg("--build-context")
        .arg(format!("build={}", context.display()))
        // An empty main context: the final stage copies nothing from it.
        .arg(context.join("empty"))
        .run()
}

/// Builds the image's root file system at `dir` (emptied first) from `bin`;
/// the paths it holds, relative to the root, sorted.
pub fn assemble(bin: &Path, dir: &Path) -> Result<Vec<PathBuf>> {
    if !bin.is_file() {
        bail!("{} does not exist: build the agent first (`cargo xtask build`)", bin.display());
    }
    if dir.exists() {
        fs::remove_dir_all(dir).with_context(|| format!("clearing {}", dir.display()))?;
    }
    fs::create_dir_all(dir.join(DATA_DIR)).with_context(|| format!("creating {}", dir.display()))?;
    let mut files = vec![PathBuf::from("observer")];
    copy(bin, &dir.join("observer"))?;
    for lib in shared_libraries(bin)? {
        let relative = lib.strip_prefix("/").unwrap_or(&lib).to_path_buf();
        // The file itself (not a symlink) at the path the loader looks for.
        let real = fs::canonicalize(&lib).with_context(|| format!("resolving {}", lib.display()))?;
        copy(&real, &dir.join(&relative))?;
        files.push(relative);
    }
    copy(Path::new(CA_BUNDLE), &dir.join(&CA_BUNDLE[1..])).context("the CA bundle (apt install ca-certificates)")?;
    files.push(PathBuf::from(&CA_BUNDLE[1..]));
    files.sort();
    Ok(files)
}

fn copy(from: &Path, to: &Path) -> Result<()> {
    if let Some(parent) = to.parent() {
        fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    fs::copy(from, to).with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    Ok(())
}

/// The shared libraries and the program interpreter `ldd` lists for `bin`
/// (the vDSO, which has no file, left out).
fn shared_libraries(bin: &Path) -> Result<Vec<PathBuf>> {
    let out = Cmd::new("ldd").arg(bin).probe()?.context("`ldd` not found (Debian's libc-bin)")?;
    if !out.status.success() {
        bail!("ldd {}: {}", bin.display(), String::from_utf8_lossy(&out.stderr).trim());
    }
    parse_ldd(&String::from_utf8_lossy(&out.stdout))
}

/// `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)` gives the path
/// after `=>`; `/lib64/ld-linux-x86-64.so.2 (0x...)` the path itself.
fn parse_ldd(text: &str) -> Result<Vec<PathBuf>> {
    let mut libs = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let path = match line.split_once("=>") {
            Some((name, target)) => match target.split_whitespace().next() {
                Some(p) if p.starts_with('/') => p,
                _ => bail!("ldd cannot find {}: `{line}`", name.trim()),
            },
            None => line.split_whitespace().next().unwrap_or_default(),
        };
        if path.starts_with('/') {
            libs.push(PathBuf::from(path));
        } else if !path.starts_with("linux-vdso") {
            bail!("unexpected ldd line `{line}`");
        }
    }
    Ok(libs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output_gives_every_file_and_skips_the_vdso() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd)\n\tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x7f2)\n\
                    \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x7f1)\n\t/lib64/ld-linux-x86-64.so.2 (0x7f3)\n";
        let libs = parse_ldd(text).unwrap();
        assert_eq!(
            libs,
            ["/lib/x86_64-linux-gnu/libgcc_s.so.1", "/lib/x86_64-linux-gnu/libc.so.6", "/lib64/ld-linux-x86-64.so.2"]
                .map(PathBuf::from)
        );
    }

    #[test]
    fn a_library_ldd_cannot_find_is_one_clear_error() {
        let err = parse_ldd("\tlibfoo.so.1 => not found\n").unwrap_err().to_string();
        assert_eq!(err, "ldd cannot find libfoo.so.1: `libfoo.so.1 => not found`");
    }
}

/// The image built for real: podman builds it (storage in a temporary
/// directory), its file system is exported without running a container,
/// and the binary runs from that tree under `chroot` (`check`, then `run`
/// for two seconds), attaching to this kernel as it would in a pod.
#[cfg(test)]
mod built {
    use std::process::Command;

    use super::*;

    /// `OBSERVER_BIN` when this run can build and use the image (root,
    /// podman); else `None` after saying why (a failure under
    /// `OBSERVER_E2E_REQUIRED=1`, as the end-to-end tests do).
    fn requirements() -> Option<PathBuf> {
        let missing = match std::env::var_os("OBSERVER_BIN").map(PathBuf::from) {
            None => "OBSERVER_BIN is not set".to_string(),
            Some(bin) if !bin.is_file() => format!("OBSERVER_BIN={} does not exist", bin.display()),
            Some(_) if !host::is_root().unwrap_or(false) => "not running as root (chroot)".to_string(),
            Some(_) if Command::new("podman").arg("--version").output().is_err() => {
                "podman is not installed (`cargo xtask setup` installs it)".to_string()
            }
            Some(bin) => return Some(bin),
        };
        assert!(std::env::var("OBSERVER_E2E_REQUIRED").as_deref() != Ok("1"), "OBSERVER_E2E_REQUIRED=1 but {missing}");
        eprintln!("SKIPPED: {missing}");
        None
    }

    fn output(cmd: &mut Command) -> std::process::Output {
        let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
        assert!(
            out.status.success(),
            "{cmd:?}: {}\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Every regular file under `dir`, relative to it, sorted.
    fn files_under(dir: &Path) -> Vec<PathBuf> {
        let mut files = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for entry in fs::read_dir(&d).unwrap().map(Result::unwrap) {
                let kind = entry.file_type().unwrap();
                if kind.is_dir() {
                    stack.push(entry.path());
                } else {
                    assert!(kind.is_file(), "{} is neither a file nor a directory", entry.path().display());
                    files.push(entry.path().strip_prefix(dir).unwrap().to_path_buf());
                }
            }
        }
        files.sort();
        files
    }

    /// `observer ARGS` with the tree as its root: /proc, /sys and /dev
    /// bound in as a runtime would, in a mount namespace of its own.
    fn in_tree(tree: &Path, args: &str) -> std::process::Output {
        let root = tree.display();
        let script = format!(
            "set -e; for d in proc sys dev; do mkdir -p {root}/$d; mount --rbind /$d {root}/$d; done; \
             exec chroot {root} /observer {args}"
        );
        output(Command::new("unshare").args(["--mount", "--propagation", "private", "sh", "-c", &script]))
    }

    /// The signals part of `observer check --json` (the features hold paths
    /// and the like that are the same on both sides too, but the signals
    /// are what `run` would deliver).
    fn signals(check: &[u8]) -> serde_json::Value {
        let report: serde_json::Value = serde_json::from_slice(check).expect("observer check --json");
        assert_eq!(report["ok"], true, "{report}");
        report["signals"].clone()
    }

    #[test]
    fn the_image_holds_a_working_agent() {
        let Some(bin) = requirements() else { return };
        let work_dir = WorkDir::new();
        let work = &work_dir.0;
        let context = work.join("context");
        let files = assemble(&bin, &context.join("rootfs")).unwrap();
        let store = work.join("store");
        let tag = "localhost/observer:image-test";
        podman_build(&context, tag, Some(&store)).unwrap();

        let podman = |args: &[&str]| {
            let mut cmd = Command::new("podman");
            cmd.arg("--root").arg(store.join("root")).arg("--runroot").arg(store.join("run"));
            cmd.args(["--storage-driver", "vfs"]).args(args);
            output(&mut cmd)
        };
        let config = podman(&["image", "inspect", "--format", "{{json .Config}}", tag]);
        let config: serde_json::Value = serde_json::from_slice(&config.stdout).unwrap();
        assert_eq!(config["Entrypoint"], serde_json::json!(["/observer"]));
        assert_eq!(config["Cmd"], serde_json::json!(["run"]));
        let container = String::from_utf8(podman(&["create", tag]).stdout).unwrap().trim().to_string();
        let tar = work.join("image.tar");
        podman(&["export", "--output", &tar.display().to_string(), &container]);
        podman(&["rm", &container]);
        let tree = work.join("tree");
        fs::create_dir_all(&tree).unwrap();
        output(Command::new("tar").arg("-xf").arg(&tar).arg("-C").arg(&tree));

        // Exactly the assembled files: the agent (the very binary), its
        // libraries, the CA bundle.
        assert_eq!(files_under(&tree), files);
        assert!(fs::read(tree.join("observer")).unwrap() == fs::read(&bin).unwrap(), "/observer is not OBSERVER_BIN");
        assert!(tree.join(DATA_DIR).is_dir());

        let version = in_tree(&tree, "--version");
        assert_eq!(version.stdout, output(Command::new(&bin).arg("--version")).stdout);
        // It loads and attaches its programs from the tree as it does from
        // the host: the same signals, each with the same mechanism.
        let inside = signals(&in_tree(&tree, "check --json").stdout);
        let outside = signals(&output(Command::new(&bin).args(["check", "--json"])).stdout);
        assert_eq!(inside, outside);
        // And runs: attached, then stopped cleanly, its files in the image's
        // data directory (a volume in a pod).
        let run = in_tree(&tree, "run --duration 2s --output plain --listen none --kubernetes off");
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert!(stderr.contains("observer: ready: ") && stderr.contains("observer: stopped events="), "{stderr}");
        for file in ["events.jsonl", "traces.jsonl", "signals.json"] {
            assert!(tree.join(DATA_DIR).join(file).is_file(), "no /{DATA_DIR}/{file} after the run: {stderr}");
        }
    }

    /// A fresh directory under the system's temporary directory (vfs storage
    /// is big: never under the workspace), removed when dropped, failed
    /// test or not.
    struct WorkDir(PathBuf);

    impl WorkDir {
        fn new() -> WorkDir {
            let dir = std::env::temp_dir().join(format!("observer-image-test-{}", std::process::id()));
            if dir.exists() {
                fs::remove_dir_all(&dir).unwrap();
            }
            fs::create_dir_all(&dir).unwrap();
            WorkDir(dir)
        }
    }

    impl Drop for WorkDir {
        fn drop(&mut self) {
            fs::remove_dir_all(&self.0).ok();
        }
    }
}
