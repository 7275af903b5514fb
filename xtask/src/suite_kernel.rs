//! A Debian kernel from another suite than the machine's own (Debian 11's
//! 5.10 from `bullseye` on a `bookworm` machine), for the VM tests only.
//!
//! The suite never enters the machine's apt sources: apt runs with a sources
//! directory, lists and cache of its own under the xtask cache, and only
//! *downloads* the one kernel package, which is unpacked by hand (vmlinuz to
//! `/boot`, modules to `/lib/modules`, `depmod`) the way its package would
//! install them, so nothing else can ever be taken from that suite.

use std::{fs, path::PathBuf};

use anyhow::{Context, Result, bail};

use crate::cmd::Cmd;

pub struct SuiteKernel {
    /// Debian suite, e.g. `bullseye` (its `-security` suite is added too:
    /// that is where an LTS suite's newest kernels are).
    pub suite: &'static str,
    /// The metapackage whose dependency names the newest kernel.
    pub metapackage: &'static str,
}

impl SuiteKernel {
    fn dir(&self) -> PathBuf {
        crate::collector::cache_dir().with_file_name(format!("apt-{}", self.suite))
    }

    /// apt's options that keep it off the machine's own sources and state.
    fn apt_options(&self) -> Vec<String> {
        let dir = self.dir();
        let d = |sub: &str| dir.join(sub).display().to_string();
        vec![
            "-o".into(),
            "Dir::Etc::sourcelist=/dev/null".into(),
            "-o".into(),
            format!("Dir::Etc::sourceparts={}", d("sources")),
            "-o".into(),
            format!("Dir::State::Lists={}", d("lists")),
            "-o".into(),
            format!("Dir::Cache={}", d("cache")),
            "-o".into(),
            "Dir::State::status=/dev/null".into(),
            "-o".into(),
            "APT::Sandbox::User=root".into(),
        ]
    }

    fn sources(&self) -> String {
        let entry = |uri: &str, suite: &str| {
            format!(
                "Types: deb\nURIs: {uri}\nSuites: {suite}\nComponents: main\n\
                 Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
            )
        };
        format!(
            "{}\n{}",
            entry("http://deb.debian.org/debian", self.suite),
            entry("http://deb.debian.org/debian-security", &format!("{}-security", self.suite))
        )
    }

    /// The newest kernel of the suite, unpacked; its `/boot/vmlinuz-*`.
    /// Reuses an earlier unpacking of the same release.
    pub fn ensure(&self) -> Result<(PathBuf, String)> {
        let dir = self.dir();
        for sub in ["sources", "lists/partial", "cache/archives/partial", "unpack"] {
            fs::create_dir_all(dir.join(sub)).with_context(|| format!("creating {}", dir.join(sub).display()))?;
        }
        fs::write(dir.join("sources").join(format!("{}.sources", self.suite)), self.sources())
            .context("writing the suite's apt sources")?;
        let opts = self.apt_options();
        Cmd::new("apt-get").args(&opts).args(["-q", "update"]).run().context("apt-get update of the suite")?;
        let release = self.newest_release()?;
        let vmlinuz = PathBuf::from(format!("/boot/vmlinuz-{release}"));
        let modules = PathBuf::from(format!("/lib/modules/{release}"));
        if vmlinuz.is_file() && modules.join("modules.dep").is_file() {
            return Ok((vmlinuz, format!("{release} already unpacked")));
        }
        let package = format!("linux-image-{release}-unsigned");
        let archives = dir.join("cache/archives");
        Cmd::new("apt-get").args(&opts).args(["-q", "download", &package]).current_dir(&archives).run()?;
        let deb = fs::read_dir(&archives)?
            .flatten()
            .map(|e| e.path())
            .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(&format!("{package}_"))))
            .with_context(|| format!("apt-get download left no {package}_*.deb in {}", archives.display()))?;
        let unpack = dir.join("unpack").join(&release);
        if unpack.exists() {
            fs::remove_dir_all(&unpack)?;
        }
        Cmd::new("dpkg-deb").arg("-x").arg(&deb).arg(&unpack).run()?;
        Cmd::new("cp").arg("-a").arg(unpack.join(format!("lib/modules/{release}"))).arg(&modules).run()?;
        Cmd::new("depmod").arg(&release).run()?;
        // Last: a vmlinuz in /boot says the unpacking finished.
        Cmd::new("cp").arg(unpack.join(format!("boot/vmlinuz-{release}"))).arg(&vmlinuz).run()?;
        fs::remove_dir_all(&unpack)?;
        fs::remove_file(&deb)?;
        Ok((vmlinuz, format!("unpacked {release} from {}", self.suite)))
    }

    /// `5.10.0-46-amd64`: what the metapackage depends on.
    fn newest_release(&self) -> Result<String> {
        let out = Cmd::new("apt-cache")
            .args(self.apt_options())
            .args(["depends", self.metapackage])
            .probe()?
            .context("apt-cache not found")?;
        let text = String::from_utf8_lossy(&out.stdout);
        release_of(&text).with_context(|| format!("`apt-cache depends {}` names no kernel: {text}", self.metapackage))
    }
}

/// The release in `Depends: linux-image-5.10.0-46-amd64`.
fn release_of(depends: &str) -> Option<String> {
    depends.lines().find_map(|l| {
        let dep = l.trim().strip_prefix("Depends: linux-image-")?;
        dep.split_whitespace().next().map(str::to_string)
    })
}

pub fn check_root(root: bool) -> Result<()> {
    if !root {
        bail!("unpacking a kernel into /boot and /lib/modules needs root");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_metapackage_names_the_release() {
        let text = "linux-image-amd64\n  Depends: linux-image-5.10.0-46-amd64\n";
        assert_eq!(release_of(text).as_deref(), Some("5.10.0-46-amd64"));
        assert_eq!(release_of("linux-image-amd64\n"), None);
    }
}
