//! Go programs the tests use that Debian does not package at the release
//! we need (promtool, helm, Jaeger v2, kube-apiserver), built at a pinned
//! version into the cache (`~/.cache/observer/NAME-VERSION/`) once, and
//! reused from there.

use std::{fs, path::PathBuf};

use anyhow::{Context, Result, bail};

use crate::{cmd::Cmd, collector};

/// How a pinned Go program is built.
pub enum How {
    /// `go install PACKAGE@VERSION`.
    Install,
    /// In a scratch module: `go get -tool PACKAGE@VERSION`, then `go build`.
    /// For modules whose go.mod has replace directives (`go install`
    /// refuses those): Jaeger.
    Tool,
    /// Like `Tool`, but the module maps its `./staging/...` modules to
    /// directories inside itself (k8s.io/kubernetes): the scratch module
    /// replaces each by the same module at `staging_version` instead.
    Staging { module: &'static str, staging_version: &'static str },
}

/// One pinned Go program.
pub struct GoTool {
    /// The binary's file name.
    pub name: &'static str,
    /// The package that is built.
    pub package: &'static str,
    /// Its module's version.
    pub version: &'static str,
    /// The test environment variable that names the binary.
    pub env: &'static str,
    pub how: How,
}

/// Prometheus' `promtool`, for `promtool check metrics` on a real scrape
/// (Prometheus 3.16 is module version v0.316.0).
pub const PROMTOOL: GoTool = GoTool {
    name: "promtool",
    package: "github.com/prometheus/prometheus/cmd/promtool",
    version: "v0.316.0",
    env: "OBSERVER_PROMTOOL",
    how: How::Install,
};

/// `helm lint` and `helm template` of the chart in deploy/helm.
pub const HELM: GoTool = GoTool {
    name: "helm",
    package: "helm.sh/helm/v3/cmd/helm",
    version: "v3.22.0",
    env: "OBSERVER_HELM",
    how: How::Install,
};

/// Jaeger v2 (in-memory storage), behind the gateway collector config in
/// the end-to-end test of deploy/collector.
pub const JAEGER: GoTool = GoTool {
    name: "jaeger",
    package: "github.com/jaegertracing/jaeger/cmd/jaeger",
    version: "v1.76.0",
    env: "OBSERVER_JAEGER",
    how: How::Tool,
};

/// A real Kubernetes API server (over Debian's etcd) for the pod metadata
/// client's tests and the chart's server-side validation.
pub const KUBE_APISERVER: GoTool = GoTool {
    name: "kube-apiserver",
    package: "k8s.io/kubernetes/cmd/kube-apiserver",
    version: "v1.37.2",
    env: "OBSERVER_KUBE_APISERVER",
    how: How::Staging { module: "k8s.io/kubernetes", staging_version: "v0.37.2" },
};

/// Every pinned Go program, in the order set-up builds them.
pub const ALL: [&GoTool; 4] = [&PROMTOOL, &HELM, &JAEGER, &KUBE_APISERVER];

impl GoTool {
    fn dir(&self) -> PathBuf {
        // Beside the collector's cache directory.
        let base = collector::cache_dir().parent().map(PathBuf::from).unwrap_or_default();
        base.join(format!("{}-{}", self.name, self.version.trim_start_matches('v')))
    }

    pub fn bin(&self) -> PathBuf {
        self.dir().join(self.name)
    }

    /// What the stamp beside the binary says once it is installed: a Go
    /// build leaves no version in such a binary to ask it for.
    fn stamp(&self) -> String {
        format!("{}@{}\n", self.package, self.version)
    }

    /// The set-up step: built unless it is there at this version.
    pub fn ensure(&self) -> Result<String> {
        let dir = self.dir();
        let stamp = dir.join("installed");
        let bin = self.bin();
        if bin.is_file() && fs::read_to_string(&stamp).is_ok_and(|s| s == self.stamp()) {
            return Ok(format!("{} {} already installed at {}", self.name, self.version, bin.display()));
        }
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        self.build(&dir)
            .with_context(|| format!("building {} {} (is the Go toolchain installed?)", self.name, self.version))?;
        if !bin.is_file() {
            bail!("building {} finished but {} is missing", self.name, bin.display());
        }
        fs::write(&stamp, self.stamp()).with_context(|| format!("writing {}", stamp.display()))?;
        Ok(format!("installed {} {} at {}", self.name, self.version, bin.display()))
    }

    fn build(&self, dir: &std::path::Path) -> Result<()> {
        let at = format!("{}@{}", self.package, self.version);
        if let How::Install = self.how {
            return Cmd::new("go").env("GOBIN", dir).args(["install", &at]).run();
        }
        // A fresh scratch module each time: a half-done earlier attempt
        // leaves nothing behind that could change this build.
        let module = dir.join("module");
        if module.exists() {
            fs::remove_dir_all(&module).with_context(|| format!("clearing {}", module.display()))?;
        }
        fs::create_dir_all(&module)?;
        let go = |args: &[&str]| Cmd::new("go").current_dir(&module).args(args.iter().copied()).run();
        go(&["mod", "init", &format!("observer.local/{}", self.name)])?;
        if let How::Staging { module: parent, staging_version } = self.how {
            let replaces = staging_replaces(parent, self.version, staging_version)?;
            let gomod = module.join("go.mod");
            let mut text = fs::read_to_string(&gomod)?;
            text.push_str(&replaces);
            fs::write(&gomod, text)?;
        }
        go(&["get", "-tool", &at])?;
        go(&["build", "-o", &self.bin().to_string_lossy(), self.package])?;
        fs::remove_dir_all(&module).ok();
        Ok(())
    }
}

/// `replace` lines for every module that `parent@version`'s go.mod maps to
/// `./staging/...`: the same module, published at `staging_version`.
fn staging_replaces(parent: &str, version: &str, staging_version: &str) -> Result<String> {
    let out = Cmd::new("go")
        .args(["mod", "download", "-json", &format!("{parent}@{version}")])
        .probe()?
        .context("`go` not found")?;
    if !out.status.success() {
        bail!("go mod download {parent}@{version}: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).context("go mod download -json")?;
    let gomod = json["GoMod"].as_str().context("go mod download -json gave no GoMod")?;
    let text = fs::read_to_string(gomod).with_context(|| format!("reading {gomod}"))?;
    let lines = replaced_by_staging(&text);
    if lines.is_empty() {
        bail!("{gomod} maps no module to ./staging: not the go.mod this build expects");
    }
    Ok(lines.iter().map(|m| format!("replace {m} => {m} {staging_version}\n")).collect())
}

/// The modules a go.mod's replace directives point at `./staging/...`, in
/// either the one-line or the block form.
fn replaced_by_staging(gomod: &str) -> Vec<String> {
    gomod
        .lines()
        .map(|l| l.trim().trim_start_matches("replace").trim())
        .filter_map(|l| {
            let (from, to) = l.split_once("=>")?;
            to.trim().starts_with("./staging/").then(|| from.split_whitespace().next().unwrap_or("").to_owned())
        })
        .filter(|m| !m.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staging_replaces_are_read_in_both_forms() {
        let gomod = "module k8s.io/kubernetes\n\nreplace k8s.io/api => ./staging/src/k8s.io/api\n\
                     replace (\n\tk8s.io/client-go => ./staging/src/k8s.io/client-go\n\
                     \tgithub.com/x/y => github.com/x/y v1.0.0\n)\n";
        assert_eq!(replaced_by_staging(gomod), ["k8s.io/api", "k8s.io/client-go"]);
    }
}
