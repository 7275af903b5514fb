//! Builds the eBPF programs (observer-ebpf) for the bpf target with the stable
//! toolchain and `RUSTC_BOOTSTRAP=1` (aya-build then adds `-Z build-std=core`),
//! so `cargo build --release` yields one binary with the programs embedded.
//!
//! When bpf-linker or rust-src is missing the build stops with one message that
//! names the README's set-up command. `cargo clippy` and `cargo doc` do not need
//! the eBPF toolchain: main.rs only raises that error outside `cfg(clippy)` and
//! `cfg(doc)`, and the embedded objects are then empty.
use std::{env, fs, path::PathBuf, process::Command};

const SETUP: &str = "cargo xtask setup";

fn main() {
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    println!("cargo::rustc-check-cfg=cfg(observer_ebpf_missing)");
    println!("cargo:rerun-if-env-changed=PATH");
    println!("cargo:rerun-if-env-changed=AYA_BUILD_SKIP");

    if let Some(missing) = missing_toolchain() {
        skip(&out_dir, &missing);
        return;
    }
    if env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true")) {
        skip(&out_dir, "AYA_BUILD_SKIP is set");
        return;
    }
    // SAFETY: build scripts are single-threaded.
    unsafe { env::set_var("RUSTC_BOOTSTRAP", "1") };
    let ebpf_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../observer-ebpf");
    let package = aya_build::Package { name: "observer-ebpf", root_dir: ebpf_dir, ..Default::default() };
    if let Err(err) = aya_build::build_ebpf([package], aya_build::Toolchain::Custom("stable")) {
        panic!("building the eBPF programs failed: {err:#}");
    }
}

/// Writes empty objects and tells main.rs why, so only a real build fails.
fn skip(out_dir: &std::path::Path, why: &str) {
    for name in ["observer", "probes"] {
        fs::write(out_dir.join(name), []).expect("write placeholder object");
    }
    println!("cargo:rustc-cfg=observer_ebpf_missing");
    println!("cargo:rustc-env=OBSERVER_EBPF_MISSING={why}; run `{SETUP}` (see README)");
}

/// Names the missing piece of the eBPF toolchain, if any.
fn missing_toolchain() -> Option<String> {
    let candidates: Vec<PathBuf> = env::var_os("PATH")
        .map(|paths| env::split_paths(&paths).map(|dir| dir.join("bpf-linker")).collect())
        .unwrap_or_default();
    if !candidates.iter().any(|p| p.is_file()) {
        // A missing path counts as changed: the check runs again on every
        // build until `cargo xtask setup` has installed the linker.
        for path in &candidates {
            println!("cargo:rerun-if-changed={}", path.display());
        }
        return Some("bpf-linker is not on PATH".into());
    }
    let sysroot = Command::new(env::var("RUSTC").unwrap_or_else(|_| "rustc".into()))
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())?;
    let core = PathBuf::from(sysroot).join("lib/rustlib/src/rust/library/core");
    if !core.is_dir() {
        println!("cargo:rerun-if-changed={}", core.display());
        return Some(format!("rust-src is not installed ({} is missing)", core.display()));
    }
    None
}
