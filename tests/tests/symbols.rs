//! `observer symbolize` against the Go runtime's own symbolization: the
//! `gostacks` fixture prints, per pc of a few stacks (inlined calls, a
//! method, a generic function, a goroutine), the frame `runtime.CallersFrames`
//! gives, and each pc's frames from `observer symbolize` must be exactly the
//! frames the runtime lists from that pc on (a pc in inlined code stands for
//! the inlined function and every function it is inlined into). Every
//! release, as plain, PIE, `-trimpath` and stripped (`-s -w`) builds.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use object::{Object, ObjectSegment};
use observer_e2e::command::output_within;
use observer_e2e::gofixture::{self, Toolchain, Variant};
use observer_e2e::require::require_bin;
use rstest::rstest;

const RUN_WITHIN: Duration = Duration::from_secs(60);

/// One frame: function, file, line.
type Frame = (String, String, u32);

/// A stack the fixture printed: per pc, its link-time address less 1 and the
/// runtime's frame for it.
struct Stack {
    name: String,
    pcs: Vec<(u64, Frame)>,
}

fn build(toolchain: Toolchain, variant: Variant) -> PathBuf {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/gostacks");
    gofixture::build_from(&source, &Path::new(env!("CARGO_TARGET_TMPDIR")).join("gofixtures"), toolchain, variant)
}

/// Runs the fixture; its pcs are converted to link-time addresses with the
/// load bias: where its mapping of file offset 0 starts (it prints that)
/// less the first loadable segment's page.
fn stacks(bin: &Path) -> Vec<Stack> {
    let out = output_within(&mut Command::new(bin), RUN_WITHIN);
    assert!(out.status.success(), "{}: {}\n{}", bin.display(), out.status, String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).expect("UTF-8 output");
    let mut lines = stdout.lines();
    let base = lines.next().and_then(|l| l.strip_prefix("base ")).and_then(hex).expect("a `base ADDR` line first");
    let data = std::fs::read(bin).unwrap_or_else(|e| panic!("{}: {e}", bin.display()));
    let elf = object::File::parse(&*data).unwrap_or_else(|e| panic!("{}: {e}", bin.display()));
    let first_page = elf.segments().map(|s| s.address()).min().expect("a loadable segment") & !0xfff;
    let bias = base - first_page;
    let mut stacks: Vec<Stack> = Vec::new();
    for line in lines {
        if let Some(name) = line.strip_prefix("stack ") {
            stacks.push(Stack { name: name.to_owned(), pcs: Vec::new() });
            continue;
        }
        let fields: Vec<_> = line.split('\t').collect();
        let [pc, function, file, number] = fields[..] else { panic!("unexpected fixture line {line:?}") };
        let pc = hex(pc).unwrap_or_else(|| panic!("bad pc in {line:?}")) - bias;
        let frame = (function.to_owned(), file.to_owned(), number.parse().expect("a line number"));
        stacks.last_mut().expect("a `stack` line first").pcs.push((pc, frame));
    }
    stacks
}

fn hex(text: &str) -> Option<u64> {
    u64::from_str_radix(text.strip_prefix("0x")?, 16).ok()
}

/// `observer symbolize`'s frames per address, in the order asked.
fn symbolize(observer: &Path, bin: &Path, addrs: &[u64]) -> Vec<Vec<Frame>> {
    let mut cmd = Command::new(observer);
    cmd.arg("symbolize").arg(bin).args(addrs.iter().map(|a| format!("{a:#x}")));
    let out = output_within(&mut cmd, RUN_WITHIN);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{cmd:?}: {}\n{stderr}", out.status);
    let stdout = String::from_utf8(out.stdout).expect("UTF-8 output");
    addrs
        .iter()
        .map(|&addr| {
            let prefix = format!("{addr:#x} ");
            stdout
                .lines()
                .filter_map(|l| l.strip_prefix(&prefix))
                .map(|l| {
                    let l = l.strip_suffix(" (inlined)").unwrap_or(l);
                    let (function, position) = l.split_once(' ').unwrap_or_else(|| panic!("bad line {l:?}"));
                    let (file, line) = position.rsplit_once(':').unwrap_or_else(|| panic!("bad position {l:?}"));
                    (function.to_owned(), file.to_owned(), line.parse().expect("a line number"))
                })
                .collect()
        })
        .collect()
}

fn symbolizes_like_the_runtime(toolchain: Toolchain, variant: Variant) {
    let Some(observer) = require_bin() else { return };
    let bin = build(toolchain, variant);
    let stacks = stacks(&bin);
    assert_eq!(
        stacks.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
        ["inlined", "method", "generic", "goroutine"]
    );
    let mut deepest = 0;
    for stack in &stacks {
        let addrs: Vec<_> = stack.pcs.iter().map(|(pc, _)| *pc).collect();
        let truth: Vec<_> = stack.pcs.iter().map(|(_, frame)| frame.clone()).collect();
        for (i, frames) in symbolize(&observer, &bin, &addrs).into_iter().enumerate() {
            let end = (i + frames.len()).min(truth.len());
            assert!(!frames.is_empty(), "{}: stack {}: no frames at {:#x}", bin.display(), stack.name, addrs[i]);
            assert_eq!(
                frames,
                truth[i..end],
                "{}: stack {}: frames at {:#x} (pc #{i})",
                bin.display(),
                stack.name,
                addrs[i]
            );
            deepest = deepest.max(frames.len());
        }
    }
    // innermost and middle, inlined into notInlined: the inlining was seen.
    assert!(deepest >= 3, "{}: no pc in inlined code (deepest expansion {deepest})", bin.display());
}

#[rstest]
fn symbolizes_like_the_runtime_per_release(
    #[values("go1.22.12", "go1.23.12", "go1.24.13", "go1.25.14", "go1.26.11", "go1.27.4")] release: &'static str,
    #[values(Variant::Plain, Variant::Pie, Variant::Trimpath, Variant::Stripped)] variant: Variant,
) {
    assert!(gofixture::RELEASES.contains(&release), "{release} is not in RELEASES");
    symbolizes_like_the_runtime(Toolchain::Release(release), variant);
}

/// The cases above cover every release the fixtures do.
#[test]
fn the_cases_cover_every_release() {
    assert_eq!(gofixture::RELEASES, ["go1.22.12", "go1.23.12", "go1.24.13", "go1.25.14", "go1.26.11", "go1.27.4"]);
}

/// Go 1.19: the older table format (magic 0xfffffff0, longer inlining
/// tree nodes).
#[rstest]
fn symbolizes_like_the_runtime_debian_go_1_19(
    #[values(Variant::Plain, Variant::Pie, Variant::Trimpath, Variant::Stripped)] variant: Variant,
) {
    let debian = Path::new(gofixture::DEBIAN_GO_1_19);
    if observer_e2e::require::require_path(debian, "Debian's golang-1.19-go").is_none() {
        return;
    }
    symbolizes_like_the_runtime(Toolchain::Debian119, variant);
}

#[rstest]
#[case::missing_file("/nonexistent/binary", "0x1000", "/nonexistent/binary")]
#[case::not_elf("/etc/passwd", "0x1000", "not a readable ELF file")]
#[case::not_go("/bin/true", "0x1000", "not a Go program")]
#[case::bad_hex("/bin/true", "0xzz", "not a hex address")]
fn bad_input_is_one_clear_error(#[case] binary: &str, #[case] addr: &str, #[case] named: &str) {
    let Some(observer) = require_bin() else { return };
    let mut cmd = Command::new(observer);
    cmd.args(["symbolize", binary, addr]);
    let out = output_within(&mut cmd, RUN_WITHIN);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{cmd:?}: {}\n{stderr}", out.status);
    assert_eq!(stderr.lines().filter(|l| l.contains(named)).count(), 1, "want one line naming {named:?}:\n{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(out.stdout.is_empty(), "printed {:?}", String::from_utf8_lossy(&out.stdout));
}
