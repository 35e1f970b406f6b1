//! TLS to the collector, for both OTLP transports: the PEM files of a [`TlsConfig`] checked
//! at start (so a wrong file fails there, named, not at the first send), the settings
//! handed to reqwest and tonic (both rustls on ring), and failed handshakes explained.

use std::error::Error;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{CertificateError, RootCertStore};

use super::config::{PemFile, TlsConfig};
use super::{SinkError, error_chain};

/// The certificates of a PEM file; at least one.
fn certificates(
    sink: &'static str,
    file: &PemFile,
) -> Result<Vec<CertificateDer<'static>>, SinkError> {
    let invalid = |reason: String| SinkError::InvalidPem {
        sink,
        path: file.path.clone(),
        reason,
    };
    let certs = CertificateDer::pem_slice_iter(&file.pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(format!("not a valid PEM file: {e}")))?;
    if certs.is_empty() {
        return Err(invalid("holds no PEM CERTIFICATE block".into()));
    }
    Ok(certs)
}

/// The private key of a PEM file.
fn private_key(sink: &'static str, file: &PemFile) -> Result<PrivateKeyDer<'static>, SinkError> {
    PrivateKeyDer::from_pem_slice(&file.pem).map_err(|e| SinkError::InvalidPem {
        sink,
        path: file.path.clone(),
        reason: format!("holds no usable PEM private key (PKCS#8, PKCS#1 or SEC1): {e}"),
    })
}

/// Checks `tls` as rustls will use it: the CA file's certificates as roots, the client
/// certificate with its key (which must match). Errors name the file at fault.
pub(crate) fn check(sink: &'static str, tls: &TlsConfig) -> Result<(), SinkError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    if let Some(ca) = &tls.ca {
        for cert in certificates(sink, ca)? {
            roots.add(cert).map_err(|e| SinkError::InvalidPem {
                sink,
                path: ca.path.clone(),
                reason: format!("not a usable CA certificate: {e}"),
            })?;
        }
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| SinkError::Tls {
            sink,
            reason: e.to_string(),
        })?
        .with_root_certificates(roots);
    match (&tls.client_cert, &tls.client_key) {
        (Some(cert), Some(key)) => {
            let chain = certificates(sink, cert)?;
            let key_der = private_key(sink, key)?;
            builder
                .with_client_auth_cert(chain, key_der)
                .map_err(|e| SinkError::Tls {
                    sink,
                    reason: format!(
                        "the client certificate {} and key {} do not go together: {e}",
                        cert.path.display(),
                        key.path.display()
                    ),
                })?;
        }
        (Some(_), None) | (None, Some(_)) => {
            return Err(SinkError::Tls {
                sink,
                reason: "a client certificate needs its key and a key its certificate: give \
                         both --client-cert and --client-key"
                    .into(),
            });
        }
        (None, None) => {}
    }
    Ok(())
}

/// Fails unless `tls` is the default or the endpoint is `https://`: a CA file or client
/// certificate on a plain-text endpoint is a mistake to report, not to ignore.
pub(crate) fn require_https(
    sink: &'static str,
    tls: &TlsConfig,
    https: bool,
) -> Result<(), SinkError> {
    if tls.is_set() && !https {
        return Err(SinkError::Tls {
            sink,
            reason: "a CA file or client certificate is given, but the endpoint is not \
                     https://: use an https:// endpoint"
                .into(),
        });
    }
    Ok(())
}

/// `builder` set up for `tls` (checked by [`check`]): the CA file's certificates instead of
/// the system's roots, and the client certificate.
pub(crate) fn reqwest_tls(
    builder: reqwest::ClientBuilder,
    tls: &TlsConfig,
) -> Result<reqwest::ClientBuilder, SinkError> {
    let mut builder = builder;
    if let Some(ca) = &tls.ca {
        builder = builder.tls_built_in_root_certs(false);
        for cert in certificates("otlp-http", ca)? {
            let cert = reqwest::Certificate::from_der(&cert).map_err(SinkError::HttpClient)?;
            builder = builder.add_root_certificate(cert);
        }
    }
    if let (Some(cert), Some(key)) = (&tls.client_cert, &tls.client_key) {
        let mut pem = cert.pem.clone();
        pem.push(b'\n');
        pem.extend_from_slice(&key.pem);
        builder =
            builder.identity(reqwest::Identity::from_pem(&pem).map_err(SinkError::HttpClient)?);
    }
    Ok(builder)
}

/// tonic's TLS settings for `tls` (checked by [`check`]).
pub(crate) fn tonic_tls(tls: &TlsConfig) -> tonic::transport::ClientTlsConfig {
    use tonic::transport::{Certificate, ClientTlsConfig, Identity};
    let mut config = ClientTlsConfig::new();
    config = match &tls.ca {
        Some(ca) => config.ca_certificate(Certificate::from_pem(&ca.pem)),
        None => config.with_native_roots(),
    };
    if let (Some(cert), Some(key)) = (&tls.client_cert, &tls.client_key) {
        config = config.identity(Identity::from_pem(&cert.pem, &key.pem));
    }
    config
}

/// What a sink knows to explain a failed handshake: where its trust comes from.
#[derive(Clone, Debug, Default)]
pub(crate) struct Trust {
    ca: Option<PathBuf>,
    client_cert: Option<PathBuf>,
    /// An `https://` endpoint, whose connection a collector that wants a client
    /// certificate may close without its alert reaching us.
    https: bool,
}

impl Trust {
    pub(crate) fn new(tls: &TlsConfig) -> Self {
        Self {
            ca: tls.ca.as_ref().map(|f| f.path.clone()),
            client_cert: tls.client_cert.as_ref().map(|f| f.path.clone()),
            https: false,
        }
    }

    /// Whether the endpoint is `https://`.
    pub(crate) fn over_https(mut self, https: bool) -> Self {
        self.https = https;
        self
    }

    /// `err`'s whole chain, led by what it means if TLS is at fault: a bare "connection
    /// error" does not tell the user to look at the CA file.
    pub(crate) fn describe(&self, err: &(dyn Error + 'static)) -> String {
        let chain = error_chain(err);
        match self.explain(err) {
            Some(why) => format!("{why}: {chain}"),
            None => chain,
        }
    }

    /// What a rustls error somewhere in `err`'s chain means for the user, if there is one.
    pub(crate) fn explain(&self, err: &(dyn Error + 'static)) -> Option<String> {
        let Some(tls) = rustls_error(err) else {
            // h2 keeps only the text of the I/O error that ended a connection: a refusal
            // after the handshake (TLS 1.3 asks for the client certificate then) reaches
            // tonic as "received fatal alert: <name>".
            let chain = error_chain(err);
            // With TLS 1.3 the client's handshake ends before the server checks the client
            // certificate: its alert races the server closing the connection, and hyper and
            // h2 may report only the close.
            let closed = [
                "connection closed",
                "connection was not ready",
                "broken pipe",
                "connection reset",
            ]
            .iter()
            .any(|c| chain.contains(c));
            if self.https && self.client_cert.is_none() && closed {
                return Some(
                    "the collector closed the TLS connection without a reason: it may \
                     require a client certificate (--client-cert and --client-key)"
                        .to_owned(),
                );
            }
            let (_, rest) = chain.split_once("received fatal alert: ")?;
            let alert: String = rest
                .chars()
                .take_while(char::is_ascii_alphanumeric)
                .collect();
            return Some(self.refused(&alert));
        };
        let ca = match &self.ca {
            Some(path) => format!("the CA file {}", path.display()),
            None => "the system's CA roots (give the collector's CA with --ca-file)".into(),
        };
        Some(match tls {
            rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer) => {
                format!("the collector's TLS certificate was not trusted: it is not signed by {ca}")
            }
            rustls::Error::InvalidCertificate(why) => {
                format!(
                    "the collector's TLS certificate was not trusted ({why:?}), checked against {ca}"
                )
            }
            rustls::Error::AlertReceived(alert) => self.refused(&format!("{alert:?}")),
            other => format!("TLS failed: {other}"),
        })
    }

    /// The collector sent the fatal TLS alert `alert`.
    fn refused(&self, alert: &str) -> String {
        let hint = match &self.client_cert {
            None if matches!(
                alert,
                "CertificateRequired" | "HandshakeFailure" | "BadCertificate"
            ) =>
            {
                ": it may require a client certificate (--client-cert and --client-key)".to_owned()
            }
            None => String::new(),
            Some(cert) => format!(
                ": it may not trust the client certificate {}",
                cert.display()
            ),
        };
        format!("the collector refused the TLS connection ({alert} alert){hint}")
    }
}

/// The first rustls error in `err`'s chain, bare or inside an `io::Error` (how hyper and
/// tonic carry it).
fn rustls_error<'a>(err: &'a (dyn Error + 'static)) -> Option<&'a rustls::Error> {
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        // io::Error's source() skips the error it wraps; look inside it.
        if let Some(tls) = e
            .downcast_ref::<io::Error>()
            .and_then(io::Error::get_ref)
            .and_then(|inner| rustls_error(inner))
        {
            return Some(tls);
        }
        next = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pem(path: &str, text: &str) -> PemFile {
        PemFile {
            path: path.into(),
            pem: text.as_bytes().to_vec(),
        }
    }

    #[test]
    fn a_file_without_certificates_is_named() {
        let tls = TlsConfig {
            ca: Some(pem("/etc/ca.pem", "not a certificate\n")),
            ..TlsConfig::default()
        };
        let err = check("otlp-http", &tls).unwrap_err().to_string();
        assert!(
            err.contains("/etc/ca.pem") && err.contains("no PEM CERTIFICATE"),
            "{err}"
        );
    }

    #[test]
    fn a_certificate_without_its_key_is_refused() {
        let tls = TlsConfig {
            client_key: Some(pem("/k.pem", "")),
            ..TlsConfig::default()
        };
        let err = check("otlp-grpc", &tls).unwrap_err().to_string();
        assert!(err.contains("--client-cert and --client-key"), "{err}");
    }

    #[test]
    fn tls_settings_need_https() {
        let tls = TlsConfig {
            ca: Some(pem("/ca.pem", "")),
            ..TlsConfig::default()
        };
        assert!(require_https("otlp-http", &tls, false).is_err());
        assert!(require_https("otlp-http", &tls, true).is_ok());
        assert!(require_https("otlp-http", &TlsConfig::default(), false).is_ok());
    }

    #[test]
    fn an_unknown_issuer_inside_an_io_error_names_the_ca_file() {
        let trust = Trust {
            ca: Some("/etc/ue/ca.pem".into()),
            client_cert: None,
            https: true,
        };
        let inner = io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer),
        );
        let text = trust.describe(&inner);
        assert!(
            text.contains("not trusted") && text.contains("/etc/ue/ca.pem"),
            "{text}"
        );
        assert_eq!(trust.explain(&io::Error::other("refused")), None);
        let h2 = io::Error::other("connection error: received fatal alert: CertificateRequired");
        let text = trust.describe(&h2);
        assert!(
            text.contains("(CertificateRequired alert): it may require a client certificate"),
            "{text}"
        );
    }
}
