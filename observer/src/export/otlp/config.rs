//! The standard `OTEL_*` variables, read and checked once at start.
//!
//! opentelemetry-otlp 0.33.1 reads some of them itself, but only where the
//! builder was not given a value, it ignores bad values with a log line, and
//! it never reads the certificate variables. So everything is read here,
//! a bad value is one error naming the variable, and the exporter is built
//! from explicit values only (`queue::build_exporter`).
//!
//! Parsing takes an env lookup (`&dyn Fn(&str) -> Option<String>`) so tests
//! never touch the process environment.

use std::{path::PathBuf, time::Duration};

use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};

/// How the agent looks a variable up (the process env, or a test's map).
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

pub const OTEL_SDK_DISABLED: &str = "OTEL_SDK_DISABLED";
pub const OTEL_RESOURCE_ATTRIBUTES: &str = "OTEL_RESOURCE_ATTRIBUTES";

/// One setting: the traces-only variable wins over the generic one.
#[derive(Clone, Copy, Debug)]
struct Var {
    traces: &'static str,
    generic: &'static str,
}

const ENDPOINT: Var = Var { traces: "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", generic: "OTEL_EXPORTER_OTLP_ENDPOINT" };
const PROTOCOL: Var = Var { traces: "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", generic: "OTEL_EXPORTER_OTLP_PROTOCOL" };
const HEADERS: Var = Var { traces: "OTEL_EXPORTER_OTLP_TRACES_HEADERS", generic: "OTEL_EXPORTER_OTLP_HEADERS" };
const TIMEOUT: Var = Var { traces: "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", generic: "OTEL_EXPORTER_OTLP_TIMEOUT" };
const COMPRESSION: Var =
    Var { traces: "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", generic: "OTEL_EXPORTER_OTLP_COMPRESSION" };
const INSECURE: Var = Var { traces: "OTEL_EXPORTER_OTLP_TRACES_INSECURE", generic: "OTEL_EXPORTER_OTLP_INSECURE" };
const CERTIFICATE: Var =
    Var { traces: "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE", generic: "OTEL_EXPORTER_OTLP_CERTIFICATE" };
const CLIENT_KEY: Var =
    Var { traces: "OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY", generic: "OTEL_EXPORTER_OTLP_CLIENT_KEY" };
const CLIENT_CERTIFICATE: Var =
    Var { traces: "OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE", generic: "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE" };

/// Every variable this module reads (README table, and a test).
#[cfg(test)]
pub const VARIABLES: &[&str] = &[
    OTEL_SDK_DISABLED,
    OTEL_RESOURCE_ATTRIBUTES,
    ENDPOINT.generic,
    ENDPOINT.traces,
    PROTOCOL.generic,
    PROTOCOL.traces,
    HEADERS.generic,
    HEADERS.traces,
    TIMEOUT.generic,
    TIMEOUT.traces,
    COMPRESSION.generic,
    COMPRESSION.traces,
    INSECURE.generic,
    INSECURE.traces,
    CERTIFICATE.generic,
    CERTIFICATE.traces,
    CLIENT_KEY.generic,
    CLIENT_KEY.traces,
    CLIENT_CERTIFICATE.generic,
    CLIENT_CERTIFICATE.traces,
];

/// The spec's default export timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Grpc,
    HttpProtobuf,
    HttpJson,
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Grpc => "grpc",
            Protocol::HttpProtobuf => "http/protobuf",
            Protocol::HttpJson => "http/json",
        }
    }
}

/// TLS material, read from the files at start (the crate reads none of it).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsSettings {
    /// PEM CA certificates to trust (`…_CERTIFICATE`); `None`: the system's.
    pub ca_pem: Option<Vec<u8>>,
    /// PEM client certificate chain and key, for mutual TLS.
    pub client_identity: Option<ClientIdentity>,
}

#[derive(Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
}

impl std::fmt::Debug for ClientIdentity {
    // Never print a private key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientIdentity").field("cert_pem", &self.cert_pem.len()).finish_non_exhaustive()
    }
}

/// Where and how to send traces. Built only from `from_env`/`from_lookup`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OtlpConfig {
    pub protocol: Protocol,
    /// The full URL: for HTTP with the `/v1/traces` path (appended to the
    /// generic endpoint, as the spec says), for gRPC as given.
    pub endpoint: String,
    /// The variable the endpoint came from.
    pub endpoint_variable: &'static str,
    /// Lowercase names, percent-decoded values.
    pub headers: Vec<(String, String)>,
    pub timeout: Duration,
    pub gzip: bool,
    /// Used when the endpoint is `https`.
    pub tls: TlsSettings,
}

impl OtlpConfig {
    pub fn is_https(&self) -> bool {
        self.endpoint.starts_with("https://")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OtlpConfigError {
    #[error("{variable}: {problem}; allowed: {allowed}")]
    Invalid { variable: &'static str, problem: String, allowed: &'static str },
    #[error("{variable}: cannot read {path}: {error}")]
    Unreadable { variable: &'static str, path: PathBuf, error: String },
    #[error("{variable}: {path}: {problem}")]
    BadFile { variable: &'static str, path: PathBuf, problem: String },
    #[error("{present} is set but {missing} is not: a client certificate needs its key, and the key its certificate")]
    Incomplete { present: &'static str, missing: &'static str },
}

fn invalid(variable: &'static str, problem: impl Into<String>, allowed: &'static str) -> OtlpConfigError {
    OtlpConfigError::Invalid { variable, problem: problem.into(), allowed }
}

/// A variable's value; empty (after trimming) counts as unset, as the spec says.
fn get(env: EnvLookup<'_>, name: &'static str) -> Option<(&'static str, String)> {
    let value = env(name)?;
    let value = value.trim();
    (!value.is_empty()).then(|| (name, value.to_string()))
}

fn get_var(env: EnvLookup<'_>, var: Var) -> Option<(&'static str, String)> {
    get(env, var.traces).or_else(|| get(env, var.generic))
}

const BOOL_ALLOWED: &str = "true or false";

fn parse_bool(variable: &'static str, value: &str) -> Result<bool, OtlpConfigError> {
    if value.eq_ignore_ascii_case("true") {
        Ok(true)
    } else if value.eq_ignore_ascii_case("false") {
        Ok(false)
    } else {
        Err(invalid(variable, format!("{value:?} is not a boolean"), BOOL_ALLOWED))
    }
}

/// The process environment (values that are not Unicode read as unset's
/// opposite: an error would be better, but `std::env::var` already names them).
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

impl OtlpConfig {
    /// From the process environment. `None`: no endpoint set, or
    /// `OTEL_SDK_DISABLED=true` (episodes then go to the embedded file).
    pub fn from_env() -> Result<Option<OtlpConfig>, OtlpConfigError> {
        Self::from_lookup(&process_env)
    }

    /// Reads every variable (so a bad value is an error even without an
    /// endpoint), then the certificate files when there is an endpoint.
    pub fn from_lookup(env: EnvLookup<'_>) -> Result<Option<OtlpConfig>, OtlpConfigError> {
        if let Some((var, value)) = get(env, OTEL_SDK_DISABLED)
            && parse_bool(var, &value)?
        {
            return Ok(None);
        }
        let protocol = match get_var(env, PROTOCOL) {
            None => Protocol::HttpProtobuf, // the spec's default
            Some((var, value)) => match value.as_str() {
                "grpc" => Protocol::Grpc,
                "http/protobuf" => Protocol::HttpProtobuf,
                "http/json" => Protocol::HttpJson,
                _ => return Err(invalid(var, format!("unknown protocol {value:?}"), "grpc, http/protobuf, http/json")),
            },
        };
        let insecure = match get_var(env, INSECURE) {
            None => false,
            Some((var, value)) => parse_bool(var, &value)?,
        };
        let headers = match get_var(env, HEADERS) {
            None => Vec::new(),
            Some((var, value)) => parse_headers(var, &value)?,
        };
        let timeout = match get_var(env, TIMEOUT) {
            None => DEFAULT_TIMEOUT,
            Some((var, value)) => match value.parse::<u64>() {
                Ok(ms) if ms > 0 => Duration::from_millis(ms),
                _ => return Err(invalid(var, format!("{value:?} is not a timeout"), "whole milliseconds above 0")),
            },
        };
        let gzip = match get_var(env, COMPRESSION) {
            None => false,
            Some((var, value)) => match value.to_ascii_lowercase().as_str() {
                "gzip" => true,
                "none" => false,
                _ => return Err(invalid(var, format!("unsupported compression {value:?}"), "gzip, none")),
            },
        };
        let endpoint = match get_var(env, ENDPOINT) {
            None => None,
            Some((var, value)) => Some((var, endpoint_url(var, &value, protocol, insecure, var == ENDPOINT.generic)?)),
        };
        let ca = get_var(env, CERTIFICATE);
        let key = get_var(env, CLIENT_KEY);
        let cert = get_var(env, CLIENT_CERTIFICATE);
        let Some((endpoint_variable, endpoint)) = endpoint else { return Ok(None) };

        let ca_pem = match ca {
            None => None,
            Some((var, path)) => {
                let pem = read_file(var, &path)?;
                check_certificates(var, &path, &pem)?;
                check_trust_anchors(var, &path, &pem)?;
                Some(pem)
            }
        };
        let client_identity = match (cert, key) {
            (None, None) => None,
            (Some((var, _)), None) => {
                return Err(OtlpConfigError::Incomplete { present: var, missing: CLIENT_KEY.generic });
            }
            (None, Some((var, _))) => {
                return Err(OtlpConfigError::Incomplete { present: var, missing: CLIENT_CERTIFICATE.generic });
            }
            (Some((cert_var, cert_path)), Some((key_var, key_path))) => {
                let cert_pem = read_file(cert_var, &cert_path)?;
                check_certificates(cert_var, &cert_path, &cert_pem)?;
                let key_pem = read_file(key_var, &key_path)?;
                if let Err(error) = PrivateKeyDer::from_pem_slice(&key_pem) {
                    return Err(OtlpConfigError::BadFile {
                        variable: key_var,
                        path: key_path.into(),
                        problem: format!("no PEM private key in it ({error})"),
                    });
                }
                Some(ClientIdentity { cert_pem, key_pem })
            }
        };
        Ok(Some(OtlpConfig {
            protocol,
            endpoint,
            endpoint_variable,
            headers,
            timeout,
            gzip,
            tls: TlsSettings { ca_pem, client_identity },
        }))
    }
}

/// Checks and completes an endpoint. gRPC takes `host:port` without a scheme
/// (`…_INSECURE` picks `http` or `https`); HTTP needs a URL, and the generic
/// variable gets the signal's path appended.
fn endpoint_url(
    var: &'static str,
    value: &str,
    protocol: Protocol,
    insecure: bool,
    generic: bool,
) -> Result<String, OtlpConfigError> {
    const ALLOWED_GRPC: &str = "a URL with http:// or https:// (or host:port, with …_INSECURE choosing the scheme)";
    const ALLOWED_HTTP: &str = "a URL with http:// or https://";
    let allowed = if protocol == Protocol::Grpc { ALLOWED_GRPC } else { ALLOWED_HTTP };
    let has_scheme = value.split_once("://").is_some_and(|(scheme, _)| !scheme.contains(['/', '?', '#']));
    let mut url = if has_scheme {
        value.to_string()
    } else if protocol == Protocol::Grpc {
        format!("{}://{value}", if insecure { "http" } else { "https" })
    } else {
        return Err(invalid(var, format!("{value:?} has no scheme"), allowed));
    };
    let parsed =
        reqwest::Url::parse(&url).map_err(|e| invalid(var, format!("{value:?} is not a URL ({e})"), allowed))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(invalid(var, format!("{value:?}: scheme {:?} is not supported", parsed.scheme()), allowed));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(invalid(var, format!("{value:?} has no host"), allowed));
    }
    if generic && protocol != Protocol::Grpc {
        // The spec: the generic endpoint is a base URL, the signal's path is appended.
        url = format!("{}/v1/traces", url.trim_end_matches('/'));
    }
    Ok(url)
}

/// `k=v,k2=v2`, keys and values percent-decoded (W3C baggage format, as the spec says).
fn parse_headers(var: &'static str, value: &str) -> Result<Vec<(String, String)>, OtlpConfigError> {
    const ALLOWED: &str = "comma-separated name=value pairs, percent-encoded (e.g. api-key=abc,x-tenant=a%20b)";
    let mut headers = Vec::new();
    for (i, entry) in value.split(',').map(str::trim).enumerate() {
        if entry.is_empty() {
            continue;
        }
        // Values may be secrets: messages name the entry, never its value.
        let Some((k, v)) = entry.split_once('=') else {
            return Err(invalid(var, format!("entry {} has no '='", i + 1), ALLOWED));
        };
        let key = percent_decode(k.trim()).map_err(|e| invalid(var, format!("entry {}: name: {e}", i + 1), ALLOWED))?;
        let val =
            percent_decode(v.trim()).map_err(|e| invalid(var, format!("entry {}: value: {e}", i + 1), ALLOWED))?;
        let name = reqwest::header::HeaderName::from_bytes(key.as_bytes())
            .map_err(|_| invalid(var, format!("entry {}: {key:?} is not a header name", i + 1), ALLOWED))?;
        if reqwest::header::HeaderValue::from_str(&val).is_err() {
            return Err(invalid(var, format!("header {key:?}: the value is not a valid header value"), ALLOWED));
        }
        headers.push((name.as_str().to_string(), val));
    }
    Ok(headers)
}

/// `%XX` escapes to bytes; the result must be UTF-8.
fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
            let byte =
                hex.and_then(|h| u8::from_str_radix(h, 16).ok()).ok_or("a '%' not followed by two hex digits")?;
            out.push(byte);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "not UTF-8 once decoded".to_string())
}

fn read_file(variable: &'static str, path: &str) -> Result<Vec<u8>, OtlpConfigError> {
    std::fs::read(path).map_err(|e| OtlpConfigError::Unreadable { variable, path: path.into(), error: e.to_string() })
}

fn check_certificates(variable: &'static str, path: &str, pem: &[u8]) -> Result<(), OtlpConfigError> {
    let bad = |problem: String| OtlpConfigError::BadFile { variable, path: path.into(), problem };
    let mut count = 0;
    for cert in CertificateDer::pem_slice_iter(pem) {
        cert.map_err(|e| bad(format!("a PEM certificate in it does not parse ({e})")))?;
        count += 1;
    }
    if count == 0 {
        return Err(bad("no PEM certificate in it".into()));
    }
    Ok(())
}

/// A CA certificate must make a trust anchor: tonic would skip one that
/// does not, silently, and trust nothing.
fn check_trust_anchors(variable: &'static str, path: &str, pem: &[u8]) -> Result<(), OtlpConfigError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem).flatten() {
        roots.add(cert).map_err(|e| OtlpConfigError::BadFile {
            variable,
            path: path.into(),
            problem: format!("a certificate in it is not usable as a CA ({e})"),
        })?;
    }
    Ok(())
}

/// The node's own attributes (`OTEL_RESOURCE_ATTRIBUTES`), merged into every
/// workload's resource (the workload's own attributes win), and the host name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeResource {
    /// In the variable's order; percent-decoded.
    pub attributes: Vec<(String, String)>,
    /// `host.name` when the variable does not set it (gethostname).
    pub host_name: Option<String>,
}

impl NodeResource {
    pub fn from_env() -> Result<NodeResource, OtlpConfigError> {
        Self::from_lookup(&process_env, super::resource::host_name())
    }

    pub fn from_lookup(env: EnvLookup<'_>, host_name: Option<String>) -> Result<NodeResource, OtlpConfigError> {
        const ALLOWED: &str = "comma-separated key=value pairs, values percent-encoded (e.g. k8s.cluster.name=prod)";
        let mut attributes: Vec<(String, String)> = Vec::new();
        if let Some((var, value)) = get(env, OTEL_RESOURCE_ATTRIBUTES) {
            for (i, entry) in value.split(',').map(str::trim).enumerate() {
                if entry.is_empty() {
                    continue;
                }
                let Some((k, v)) = entry.split_once('=') else {
                    return Err(invalid(var, format!("entry {} ({entry:?}) has no '='", i + 1), ALLOWED));
                };
                let key =
                    percent_decode(k.trim()).map_err(|e| invalid(var, format!("entry {}: {e}", i + 1), ALLOWED))?;
                let val =
                    percent_decode(v.trim()).map_err(|e| invalid(var, format!("entry {}: {e}", i + 1), ALLOWED))?;
                if key.is_empty() {
                    return Err(invalid(var, format!("entry {} has an empty key", i + 1), ALLOWED));
                }
                // A later duplicate wins, as in the SDK's own parser.
                attributes.retain(|(k, _)| *k != key);
                attributes.push((key, val));
            }
        }
        Ok(NodeResource { attributes, host_name })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn lookup(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
        let map: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |name| map.get(name).cloned()
    }

    fn config(vars: &[(&str, &str)]) -> Result<Option<OtlpConfig>, OtlpConfigError> {
        OtlpConfig::from_lookup(&lookup(vars))
    }

    fn variable_of(err: OtlpConfigError) -> &'static str {
        match err {
            OtlpConfigError::Invalid { variable, .. }
            | OtlpConfigError::Unreadable { variable, .. }
            | OtlpConfigError::BadFile { variable, .. } => variable,
            OtlpConfigError::Incomplete { present, .. } => present,
        }
    }

    #[test]
    fn no_endpoint_or_disabled_is_none() {
        assert_eq!(config(&[]), Ok(None));
        assert_eq!(config(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "  ")]), Ok(None));
        assert_eq!(
            config(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"), ("OTEL_SDK_DISABLED", "TRUE")]),
            Ok(None)
        );
        let on = config(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"), ("OTEL_SDK_DISABLED", "false")]);
        assert!(matches!(on, Ok(Some(_))));
    }

    #[test]
    fn http_generic_endpoint_gets_the_traces_path_and_defaults() {
        let c = config(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/")]).unwrap().unwrap();
        assert_eq!(c.protocol, Protocol::HttpProtobuf);
        assert_eq!(c.endpoint, "http://collector:4318/v1/traces");
        assert_eq!(c.endpoint_variable, "OTEL_EXPORTER_OTLP_ENDPOINT");
        assert_eq!(c.timeout, Duration::from_secs(10));
        assert!(!c.gzip);
        assert!(c.headers.is_empty());
        let c = config(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318/base")]).unwrap().unwrap();
        assert_eq!(c.endpoint, "http://c:4318/base/v1/traces");
    }

    #[test]
    fn traces_endpoint_wins_and_is_kept_as_is() {
        let c = config(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://generic:4318"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "https://traces:443/custom"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(c.endpoint, "https://traces:443/custom");
        assert_eq!(c.endpoint_variable, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
        assert!(c.is_https());
    }

    #[test]
    fn grpc_endpoint_as_given_and_insecure_picks_the_scheme_of_host_port() {
        let base = [("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")];
        let c = config(&[base[0], ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317")]).unwrap().unwrap();
        assert_eq!((c.protocol, c.endpoint.as_str()), (Protocol::Grpc, "http://c:4317"));
        let c = config(&[base[0], ("OTEL_EXPORTER_OTLP_ENDPOINT", "c:4317")]).unwrap().unwrap();
        assert_eq!(c.endpoint, "https://c:4317");
        let c = config(&[base[0], ("OTEL_EXPORTER_OTLP_ENDPOINT", "c:4317"), ("OTEL_EXPORTER_OTLP_INSECURE", "true")])
            .unwrap()
            .unwrap();
        assert_eq!(c.endpoint, "http://c:4317");
        // An explicit scheme wins over INSECURE.
        let c = config(&[
            base[0],
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://c:4317"),
            ("OTEL_EXPORTER_OTLP_TRACES_INSECURE", "true"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(c.endpoint, "https://c:4317");
    }

    #[test]
    fn protocol_timeout_compression_headers() {
        let c = config(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/json"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "GZIP"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "ignored=1"),
            ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", " Api-Key = s%3Dcr%2Cet , x-tenant=a%20b,,"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(c.protocol, Protocol::HttpJson);
        assert_eq!(c.endpoint, "http://c:4318/v1/traces");
        assert_eq!(c.timeout, Duration::from_millis(2500));
        assert!(c.gzip);
        assert_eq!(
            c.headers,
            vec![("api-key".to_string(), "s=cr,et".to_string()), ("x-tenant".to_string(), "a b".to_string())]
        );
    }

    #[test]
    fn every_bad_value_names_its_variable() {
        let ep = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318");
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("OTEL_SDK_DISABLED", "yes")], "OTEL_SDK_DISABLED"),
            (&[ep, ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/xml")], "OTEL_EXPORTER_OTLP_PROTOCOL"),
            (&[ep, ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "GRPC")], "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"),
            (&[ep, ("OTEL_EXPORTER_OTLP_TIMEOUT", "10s")], "OTEL_EXPORTER_OTLP_TIMEOUT"),
            (&[ep, ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "0")], "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT"),
            (&[ep, ("OTEL_EXPORTER_OTLP_COMPRESSION", "zstd")], "OTEL_EXPORTER_OTLP_COMPRESSION"),
            (&[ep, ("OTEL_EXPORTER_OTLP_INSECURE", "1")], "OTEL_EXPORTER_OTLP_INSECURE"),
            (&[ep, ("OTEL_EXPORTER_OTLP_HEADERS", "novalue")], "OTEL_EXPORTER_OTLP_HEADERS"),
            (&[ep, ("OTEL_EXPORTER_OTLP_HEADERS", "k=%zz")], "OTEL_EXPORTER_OTLP_HEADERS"),
            (&[ep, ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "bad key=v")], "OTEL_EXPORTER_OTLP_TRACES_HEADERS"),
            (&[ep, ("OTEL_EXPORTER_OTLP_HEADERS", "k=a%0Ab")], "OTEL_EXPORTER_OTLP_HEADERS"),
            (&[("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318")], "OTEL_EXPORTER_OTLP_ENDPOINT"),
            (&[("OTEL_EXPORTER_OTLP_ENDPOINT", "ftp://c:21")], "OTEL_EXPORTER_OTLP_ENDPOINT"),
            (&[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://")], "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
            (&[ep, ("OTEL_EXPORTER_OTLP_CERTIFICATE", "/nonexistent/ca.pem")], "OTEL_EXPORTER_OTLP_CERTIFICATE"),
            (&[ep, ("OTEL_EXPORTER_OTLP_CLIENT_KEY", "/k.pem")], "OTEL_EXPORTER_OTLP_CLIENT_KEY"),
            (
                &[ep, ("OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE", "/c.pem")],
                "OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE",
            ),
        ];
        for (vars, variable) in cases {
            let err = config(vars).expect_err(variable);
            let text = err.to_string();
            assert!(text.starts_with(variable), "{text}");
            assert!(text.contains("allowed") || text.contains("read") || text.contains("needs"), "{text}");
            assert_eq!(variable_of(err), *variable);
        }
        // A bad value is an error even with no endpoint set.
        assert!(config(&[("OTEL_EXPORTER_OTLP_COMPRESSION", "br")]).is_err());
        // A header's value is never echoed (it may be a token).
        let err = config(&[ep, ("OTEL_EXPORTER_OTLP_HEADERS", "authorization=Bearer%0Asecret")]).unwrap_err();
        assert!(!err.to_string().contains("secret"), "{err}");
    }

    #[test]
    fn certificate_files_are_read_and_checked_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let (ca, cert, key) = super::super::testdata::write_pems(dir.path());
        let not_pem = dir.path().join("not.pem");
        std::fs::write(&not_pem, "hello").unwrap();
        let ep = ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://c:4318");
        let c = config(&[
            ep,
            ("OTEL_EXPORTER_OTLP_CERTIFICATE", ca.to_str().unwrap()),
            ("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", cert.to_str().unwrap()),
            ("OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY", key.to_str().unwrap()),
        ])
        .unwrap()
        .unwrap();
        assert!(c.tls.ca_pem.is_some());
        assert!(c.tls.client_identity.is_some());
        assert!(!format!("{:?}", c.tls).contains("PRIVATE KEY"));

        let err = config(&[ep, ("OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE", not_pem.to_str().unwrap())]).unwrap_err();
        assert!(matches!(err, OtlpConfigError::BadFile { variable: "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE", .. }));
        assert!(err.to_string().contains("not.pem"), "{err}");
        let err = config(&[
            ep,
            ("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", cert.to_str().unwrap()),
            ("OTEL_EXPORTER_OTLP_CLIENT_KEY", not_pem.to_str().unwrap()),
        ])
        .unwrap_err();
        assert!(matches!(err, OtlpConfigError::BadFile { variable: "OTEL_EXPORTER_OTLP_CLIENT_KEY", .. }));
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n").unwrap();
        let err = config(&[ep, ("OTEL_EXPORTER_OTLP_CERTIFICATE", garbage.to_str().unwrap())]).unwrap_err();
        assert!(matches!(err, OtlpConfigError::BadFile { variable: "OTEL_EXPORTER_OTLP_CERTIFICATE", .. }), "{err}");
        let missing = dir.path().join("missing.pem");
        let err = config(&[ep, ("OTEL_EXPORTER_OTLP_CERTIFICATE", missing.to_str().unwrap())]).unwrap_err();
        assert!(err.to_string().contains("missing.pem") && err.to_string().contains("cannot read"), "{err}");
    }

    #[test]
    fn resource_attributes_parse_and_reject() {
        let env =
            lookup(&[("OTEL_RESOURCE_ATTRIBUTES", "k8s.cluster.name=prod, deployment.environment.name=a%2Cb,x=1,x=2")]);
        let node = NodeResource::from_lookup(&env, Some("node-1".into())).unwrap();
        assert_eq!(
            node.attributes,
            vec![
                ("k8s.cluster.name".to_string(), "prod".to_string()),
                ("deployment.environment.name".to_string(), "a,b".to_string()),
                ("x".to_string(), "2".to_string()),
            ]
        );
        assert_eq!(node.host_name.as_deref(), Some("node-1"));
        for bad in ["novalue", "=v", "k=%4"] {
            let env = lookup(&[("OTEL_RESOURCE_ATTRIBUTES", bad)]);
            let err = NodeResource::from_lookup(&env, None).unwrap_err();
            assert!(err.to_string().starts_with("OTEL_RESOURCE_ATTRIBUTES"), "{err}");
        }
    }

    #[test]
    fn variables_list_is_complete() {
        assert_eq!(VARIABLES.len(), 20);
        assert!(VARIABLES.iter().all(|v| v.starts_with("OTEL_")));
    }
}
