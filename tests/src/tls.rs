//! TLS material made per test with the `openssl` CLI, in a temporary
//! directory: a CA, a server certificate for `localhost` and 127.0.0.1
//! signed by it, and a client certificate (for mutual TLS) signed by it.
//!
//! Keys are EC P-256 in PKCS#8 PEM, certificates X.509 v3 PEM with the
//! extensions webpki (rustls) insists on: the CA with `basicConstraints
//! CA:TRUE` and `keyCertSign`, each leaf with `CA:FALSE`, a subject
//! alternative name and its extended key usage.

use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;

use crate::command::run_ok;

/// A CA and the server and client certificates it signed. The files go away
/// on drop.
pub struct TestPki {
    dir: TempDir,
}

impl TestPki {
    /// Makes the CA, the server certificate (`DNS:localhost`, `IP:127.0.0.1`,
    /// `IP:::1`) and the client certificate (`CN=observer-test-client`).
    /// Panics with openssl's output when a step fails.
    pub fn create() -> TestPki {
        let dir = tempfile::tempdir().expect("temporary directory for TLS material");
        let pki = TestPki { dir };
        let d = pki.dir.path();
        let ext = |name: &str, text: &str| {
            let path = d.join(name);
            std::fs::write(&path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            path
        };
        let ca_ext = ext(
            "ca.ext",
            "[v3]\nbasicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n\
             subjectKeyIdentifier=hash\n",
        );
        let server_ext = ext(
            "server.ext",
            "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n\
             extendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1\n\
             authorityKeyIdentifier=keyid\n",
        );
        let client_ext = ext(
            "client.ext",
            "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n\
             extendedKeyUsage=clientAuth\nsubjectAltName=DNS:observer-test-client\n\
             authorityKeyIdentifier=keyid\n",
        );
        genkey(&pki.ca_key());
        run_ok(
            openssl()
                .args(["req", "-x509", "-new", "-sha256", "-days", "2", "-subj", "/CN=observer-test-ca"])
                .arg("-key")
                .arg(pki.ca_key())
                .arg("-config")
                .arg(&ca_ext)
                .args(["-extensions", "v3"])
                .arg("-out")
                .arg(pki.ca_cert()),
        );
        pki.leaf("server", "/CN=localhost", &server_ext);
        pki.leaf("client", "/CN=observer-test-client", &client_ext);
        pki
    }

    /// A key `NAME.key` and a certificate `NAME.pem` signed by the CA.
    fn leaf(&self, name: &str, subject: &str, ext: &Path) {
        let d = self.dir.path();
        let (key, csr, cert) =
            (d.join(format!("{name}.key")), d.join(format!("{name}.csr")), d.join(format!("{name}.pem")));
        genkey(&key);
        run_ok(
            openssl().args(["req", "-new", "-sha256", "-subj", subject]).arg("-key").arg(&key).arg("-out").arg(&csr),
        );
        run_ok(
            openssl()
                .args(["x509", "-req", "-sha256", "-days", "2", "-set_serial"])
                .arg(serial(name))
                .arg("-in")
                .arg(&csr)
                .arg("-CA")
                .arg(self.ca_cert())
                .arg("-CAkey")
                .arg(self.ca_key())
                .arg("-extfile")
                .arg(ext)
                .arg("-out")
                .arg(&cert),
        );
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The CA certificate (what a client trusts: `OTEL_EXPORTER_OTLP_CERTIFICATE`).
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    fn ca_key(&self) -> PathBuf {
        self.dir.path().join("ca.key")
    }

    pub fn server_cert(&self) -> PathBuf {
        self.dir.path().join("server.pem")
    }

    pub fn server_key(&self) -> PathBuf {
        self.dir.path().join("server.key")
    }

    /// `OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE`.
    pub fn client_cert(&self) -> PathBuf {
        self.dir.path().join("client.pem")
    }

    /// `OTEL_EXPORTER_OTLP_CLIENT_KEY`.
    pub fn client_key(&self) -> PathBuf {
        self.dir.path().join("client.key")
    }
}

fn openssl() -> Command {
    Command::new("openssl")
}

/// An EC P-256 private key, PKCS#8 PEM.
fn genkey(path: &Path) {
    run_ok(
        openssl().args(["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"]).arg("-out").arg(path),
    );
}

/// A serial number unique per certificate of one CA (random enough across runs).
fn serial(name: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let salt = if name == "server" { 1 } else { 2 };
    format!("0x{:x}{salt}", nanos & 0xffff_ffff_ffff)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// openssl itself accepts the chain, for the purposes each leaf is for.
    #[test]
    fn certificates_verify_against_the_ca() {
        if Command::new("openssl").arg("version").output().is_err() {
            eprintln!("SKIPPED: no openssl CLI");
            return;
        }
        let pki = TestPki::create();
        for (cert, purpose) in [(pki.server_cert(), "sslserver"), (pki.client_cert(), "sslclient")] {
            let out = run_ok(
                openssl().arg("verify").arg("-CAfile").arg(pki.ca_cert()).args(["-purpose", purpose]).arg(&cert),
            );
            assert!(String::from_utf8_lossy(&out.stdout).contains(": OK"), "{cert:?}: {out:?}");
        }
        let text = run_ok(openssl().args(["x509", "-noout", "-ext", "subjectAltName", "-in"]).arg(pki.server_cert()));
        let text = String::from_utf8_lossy(&text.stdout);
        assert!(text.contains("DNS:localhost") && text.contains("IP Address:127.0.0.1"), "{text}");
    }
}
