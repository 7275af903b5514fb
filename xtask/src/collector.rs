//! The OpenTelemetry Collector the end-to-end tests export to: built with the
//! collector builder (`ocb`) from `tests/collector/builder.yaml`, every module
//! pinned to [`VERSION`], into a cache outside the workspace
//! (`~/.cache/observer/otelcol-VERSION/`) that survives `cargo clean`.
//!
//! Nothing is built when the cached binary reports the pinned version and was
//! built from the manifest as it is now (a copy of it is kept beside the
//! binary); the builder itself is reused the same way.

use std::{
    env, fs,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, bail};

use crate::{cmd::Cmd, host};

/// The builder's release, and every component module's version in the manifest.
pub const VERSION: &str = "0.161.0";
/// `dist.name` in the manifest: the binary's file name.
const NAME: &str = "otelcol-observer";
const BUILDER_MODULE: &str = "go.opentelemetry.io/collector/cmd/builder";

/// The committed builder manifest.
pub fn manifest() -> PathBuf {
    host::workspace_root().join("tests/collector/builder.yaml")
}

/// `$XDG_CACHE_HOME/observer/otelcol-VERSION`, else `~/.cache/observer/otelcol-VERSION`.
pub fn cache_dir() -> PathBuf {
    let base = env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| host::target_dir().join("cache"));
    base.join("observer").join(format!("otelcol-{VERSION}"))
}

/// The collector binary the tests run (`OBSERVER_OTELCOL`).
pub fn bin() -> PathBuf {
    cache_dir().join(NAME)
}

/// The set-up step: the collector at [`bin`], built unless it is there already.
pub fn ensure() -> Result<String> {
    let manifest_path = manifest();
    let manifest =
        fs::read_to_string(&manifest_path).with_context(|| format!("reading {}", manifest_path.display()))?;
    let dir = cache_dir();
    let bin = bin();
    let stamp = dir.join("builder.yaml");
    match version_of(&bin, "--version")? {
        Some(v) if v == VERSION && fs::read_to_string(&stamp).is_ok_and(|s| s == manifest) => {
            return Ok(format!("{VERSION} already built at {}", bin.display()));
        }
        Some(v) if v == VERSION => eprintln!("    {} was built from another manifest", bin.display()),
        Some(v) => eprintln!("    {} is version {v}, want {VERSION}", bin.display()),
        None => eprintln!("    {} not found", bin.display()),
    }
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let builder = builder(&dir)?;

    // The builder generates the sources into `output_path` (./build, relative
    // to where it runs), fetches the modules and compiles there.
    let build_dir = dir.join("build");
    if build_dir.exists() {
        fs::remove_dir_all(&build_dir).with_context(|| format!("removing {}", build_dir.display()))?;
    }
    Cmd::new(&builder)
        .arg("--config")
        .arg(&manifest_path)
        .current_dir(&dir)
        .run()
        .context("building the collector: the builder's error is above (a module the proxy refuses is named there)")?;
    let built = build_dir.join(NAME);
    fs::rename(&built, &bin).with_context(|| format!("{} -> {}", built.display(), bin.display()))?;
    fs::write(&stamp, &manifest).with_context(|| format!("writing {}", stamp.display()))?;
    match version_of(&bin, "--version")? {
        Some(v) if v == VERSION => {}
        found => bail!("built {} but `--version` reports {}", bin.display(), found.as_deref().unwrap_or("nothing")),
    }
    let size = fs::metadata(&bin).map(|m| m.len() >> 20).unwrap_or(0);
    Ok(format!("built {VERSION} at {} ({size} MiB)", bin.display()))
}

/// The builder at the pinned version, `go install`ed into `dir/gobin` unless it is there.
fn builder(dir: &Path) -> Result<PathBuf> {
    let gobin = dir.join("gobin");
    let builder = gobin.join("builder");
    match version_of(&builder, "version")? {
        Some(v) if v == VERSION => return Ok(builder),
        Some(v) => eprintln!("    found builder {v}, want {VERSION}"),
        None => eprintln!("    builder not found at {}", builder.display()),
    }
    Cmd::new("go")
        .env("GOBIN", &gobin)
        .args(["install", &format!("{BUILDER_MODULE}@v{VERSION}")])
        .run()
        .context("installing the collector builder (is the Go toolchain installed?)")?;
    match version_of(&builder, "version")? {
        Some(v) if v == VERSION => Ok(builder),
        found => bail!("installed the builder but it reports {}", found.as_deref().unwrap_or("nothing")),
    }
}

/// The version `program ARG` prints (`otelcol-observer version 0.161.0`,
/// `ocb version 0.161.0`), without a leading `v`; `None` when it does not run.
fn version_of(program: &Path, arg: &str) -> Result<Option<String>> {
    if !program.is_file() {
        return Ok(None);
    }
    let Some(out) = Cmd::new(program).arg(arg).probe()? else {
        return Ok(None);
    };
    if !out.status.success() {
        return Ok(None);
    }
    // The builder prints its version on stderr, the collector on stdout.
    let text = [out.stdout, out.stderr].concat();
    Ok(parse_version(&String::from_utf8_lossy(&text)))
}

/// The word after `version` in `NAME version X` (a leading `v` dropped).
fn parse_version(text: &str) -> Option<String> {
    let mut words = text.split_whitespace().skip_while(|w| *w != "version");
    words.next()?;
    Some(words.next()?.trim_start_matches('v').to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_versions() {
        assert_eq!(parse_version("otelcol-observer version 0.161.0\n").as_deref(), Some("0.161.0"));
        assert_eq!(parse_version("ocb version v0.161.0\n").as_deref(), Some("0.161.0"));
        assert_eq!(parse_version("nothing here"), None);
    }

    #[test]
    fn manifest_pins_every_module() {
        let text = fs::read_to_string(manifest()).unwrap();
        let mods: Vec<&str> = text.lines().filter_map(|l| l.trim().strip_prefix("- gomod: ")).collect();
        assert_eq!(mods.len(), 7, "{mods:?}");
        for m in mods {
            assert!(m.ends_with(&format!(" v{VERSION}")), "{m} is not pinned to v{VERSION}");
        }
    }
}
