//! The TLS the exporter gets from us. opentelemetry-otlp 0.33.1 reads none
//! of the certificate variables, and for an `https` gRPC endpoint without an
//! explicit config it builds `ClientTlsConfig::new()`, which trusts no root
//! at all (it never calls `with_native_roots`). So both transports get an
//! explicit config: the `…_CERTIFICATE` CA when set, else the system's CA
//! certificates (rustls-native-certs, as tonic's native roots), plus the client
//! certificate and key for mutual TLS. ring is the provider (not aws-lc).

use std::sync::Arc;

use opentelemetry_otlp::tonic_types::transport::{Certificate, ClientTlsConfig, Identity};
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};

use super::config::TlsSettings;

/// For tonic (gRPC). tonic itself uses ring (the `tls-ring` feature) and
/// fails the exporter's build when the system has no CA certificate.
pub fn grpc_tls(tls: &TlsSettings) -> ClientTlsConfig {
    let config = match &tls.ca_pem {
        Some(pem) => ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem)),
        None => ClientTlsConfig::new().with_native_roots(),
    };
    match &tls.client_identity {
        Some(id) => config.identity(Identity::from_pem(&id.cert_pem, &id.key_pem)),
        None => config,
    }
}

/// For reqwest (HTTP). Given to reqwest even for `http://` endpoints: built
/// with `rustls-no-provider`, reqwest would otherwise look for a process-wide
/// provider and panic without one. `https` false: no roots are loaded.
pub fn http_tls(tls: &TlsSettings, https: bool) -> Result<ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS versions: {e}"))?;
    let mut roots = RootCertStore::empty();
    match &tls.ca_pem {
        Some(pem) => {
            for cert in CertificateDer::pem_slice_iter(pem) {
                let cert = cert.map_err(|e| format!("CA certificate: {e}"))?;
                roots.add(cert).map_err(|e| format!("CA certificate: {e}"))?;
            }
        }
        None if https => {
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
            if roots.is_empty() {
                return Err("no CA certificate found on the system; set OTEL_EXPORTER_OTLP_CERTIFICATE".into());
            }
        }
        None => {}
    }
    let builder = builder.with_root_certificates(roots);
    match &tls.client_identity {
        Some(id) => {
            let chain = CertificateDer::pem_slice_iter(&id.cert_pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("client certificate: {e}"))?;
            let key = PrivateKeyDer::from_pem_slice(&id.key_pem).map_err(|e| format!("client key: {e}"))?;
            builder.with_client_auth_cert(chain, key).map_err(|e| format!("client certificate and key: {e}"))
        }
        None => Ok(builder.with_no_client_auth()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::otlp::{config::ClientIdentity, testdata};

    fn mtls() -> TlsSettings {
        TlsSettings {
            ca_pem: Some(testdata::CA_PEM.as_bytes().to_vec()),
            client_identity: Some(ClientIdentity {
                cert_pem: testdata::CLIENT_CERT_PEM.as_bytes().to_vec(),
                key_pem: testdata::CLIENT_KEY_PEM.as_bytes().to_vec(),
            }),
        }
    }

    #[test]
    fn http_tls_takes_the_ca_and_client_identity() {
        let config = http_tls(&mtls(), true).unwrap();
        assert!(config.client_auth_cert_resolver.has_certs());
        let plain = http_tls(&TlsSettings::default(), false).unwrap();
        assert!(!plain.client_auth_cert_resolver.has_certs());
    }

    #[test]
    fn http_tls_rejects_a_key_that_does_not_match_the_certificate() {
        let mut tls = mtls();
        if let Some(id) = tls.client_identity.as_mut() {
            // The CA's certificate with the client's key: a mismatch rustls catches.
            id.cert_pem = testdata::CA_PEM.as_bytes().to_vec();
        }
        assert!(http_tls(&tls, true).unwrap_err().contains("client certificate and key"));
    }

    #[test]
    fn grpc_tls_builds() {
        // tonic checks the material when the channel is built (queue tests
        // build a real exporter with it); here only that it takes it.
        let _ = grpc_tls(&mtls());
        let _ = grpc_tls(&TlsSettings::default());
    }
}
