//! TLS with rustls (ring provider): the server configuration built from the settings,
//! and what a finished handshake tells the application.
//!
//! Loading is strict and its errors name the file and the problem, because the
//! supervisor calls [`check`] before it forks, so a bad path, an unreadable or
//! encrypted key without its password, or a key that does not belong to the
//! certificate stops gristmill at start-up with one clear line (exit code 2) instead of
//! failing every handshake later.
//!
//! Keys: PKCS#8, PKCS#1 (RSA) and SEC1 (EC) PEM, parsed by `rustls-pki-types`;
//! encrypted PKCS#8 (`ENCRYPTED PRIVATE KEY`, PBES2) is decrypted with the `pkcs8`
//! crate. Legacy OpenSSL-encrypted PEM (`Proc-Type: 4,ENCRYPTED`) is refused with a hint
//! to convert it.

use std::fmt;
use std::sync::Arc;

use rustls::crypto::ring;
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig, ServerConnection};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::config::{ClientVerify, HttpMode, TlsSettings, TlsVersion};

/// Why the TLS configuration could not be built.
#[derive(Debug)]
pub struct TlsError(String);

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TlsError {}

impl From<TlsError> for pyo3::PyErr {
    fn from(e: TlsError) -> Self {
        pyo3::exceptions::PyValueError::new_err(e.0)
    }
}

fn err(msg: impl Into<String>) -> TlsError {
    TlsError(msg.into())
}

/// Build the rustls server configuration; ALPN offers what `mode` allows.
pub fn server_config(s: &TlsSettings, mode: HttpMode) -> Result<Arc<ServerConfig>, TlsError> {
    server_config_with(s, mode, Arc::new(ring::default_provider()))
}

/// [`server_config`] with `provider` in place of the plain ring provider (HTTP/3 wraps
/// its suites, see `crate::http3::cipher`).
pub fn server_config_with(
    s: &TlsSettings,
    mode: HttpMode,
    provider: Arc<rustls::crypto::CryptoProvider>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let chain = load_certs(&s.certfile, "ssl_certfile")?;
    let key = load_key(&s.keyfile, s.keyfile_password.as_deref())?;
    let versions: &[&rustls::SupportedProtocolVersion] = match s.min_version {
        TlsVersion::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        TlsVersion::Tls13 => &[&rustls::version::TLS13],
    };
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|e| err(format!("TLS versions: {e}")))?;
    let builder = match s.client_verify {
        ClientVerify::None => builder.with_no_client_auth(),
        ClientVerify::Optional | ClientVerify::Required => {
            let path = s.ca_certs.as_deref().ok_or_else(|| {
                err("ssl_client_verify needs ssl_ca_certs (the CAs that sign client certificates)")
            })?;
            let mut roots = RootCertStore::empty();
            for cert in load_certs(path, "ssl_ca_certs")? {
                roots
                    .add(cert)
                    .map_err(|e| err(format!("ssl_ca_certs {path}: {e}")))?;
            }
            let mut v = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            if s.client_verify == ClientVerify::Optional {
                v = v.allow_unauthenticated();
            }
            let verifier = v
                .build()
                .map_err(|e| err(format!("ssl_ca_certs {path}: {e}")))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(chain, key).map_err(|e| match e {
        rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => err(format!(
            "ssl_keyfile {} does not match the certificate in ssl_certfile {}",
            s.keyfile, s.certfile
        )),
        other => err(format!(
            "ssl_certfile {} / ssl_keyfile {}: {other}",
            s.certfile, s.keyfile
        )),
    })?;
    config.alpn_protocols = match mode {
        HttpMode::Auto => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
        HttpMode::Http1 => vec![b"http/1.1".to_vec()],
        HttpMode::Http2 => vec![b"h2".to_vec()],
    };
    Ok(Arc::new(config))
}

/// Check the TLS settings without serving: what the supervisor runs before forking.
pub fn check(s: &TlsSettings, mode: HttpMode) -> Result<(), TlsError> {
    server_config(s, mode).map(drop)
}

fn read(path: &str, what: &str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| err(format!("cannot read {what} {path}: {e}")))
}

fn load_certs(path: &str, what: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path, what)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(format!("{what} {path}: invalid PEM: {e}")))?;
    if certs.is_empty() {
        return Err(err(format!("{what} {path}: no CERTIFICATE in the file")));
    }
    Ok(certs)
}

fn load_key(path: &str, password: Option<&str>) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(path, "ssl_keyfile")?;
    let text = String::from_utf8_lossy(&pem);
    if text.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----") {
        let Some(password) = password else {
            return Err(err(format!(
                "ssl_keyfile {path} is encrypted: give its password with ssl_keyfile_password"
            )));
        };
        let (label, doc) = pkcs8::der::Document::from_pem(text.trim())
            .map_err(|e| err(format!("ssl_keyfile {path}: invalid PEM: {e}")))?;
        if label != "ENCRYPTED PRIVATE KEY" {
            return Err(err(format!(
                "ssl_keyfile {path}: unexpected PEM label {label}"
            )));
        }
        let info = pkcs8::EncryptedPrivateKeyInfo::try_from(doc.as_bytes())
            .map_err(|e| err(format!("ssl_keyfile {path}: invalid encrypted key: {e}")))?;
        let secret = info.decrypt(password).map_err(|e| {
            err(format!(
                "ssl_keyfile {path}: cannot decrypt the key (wrong ssl_keyfile_password?): {e}"
            ))
        })?;
        return Ok(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
            secret.as_bytes().to_vec(),
        )));
    }
    if text.contains("Proc-Type: 4,ENCRYPTED") {
        return Err(err(format!(
            "ssl_keyfile {path} uses legacy OpenSSL PEM encryption; convert it to encrypted \
             PKCS#8: openssl pkcs8 -topk8 -in OLD -out NEW"
        )));
    }
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
        err(format!(
            "ssl_keyfile {path}: no usable private key (PKCS#8, PKCS#1 or SEC1 PEM): {e}"
        ))
    })
}

/// What the application may learn about a TLS connection (see `wsgi::environ`).
#[derive(Debug, Default)]
pub struct TlsInfo {
    /// `TLSv1.2` or `TLSv1.3`.
    pub protocol: &'static str,
    /// The IANA name of the negotiated cipher suite.
    pub cipher: String,
    /// The protocol and cipher suite as their 16-bit IANA codes (ASGI's `tls` extension).
    pub version_code: u16,
    pub cipher_code: u16,
    /// The client's end-entity certificate, verified against `ssl_ca_certs`.
    pub client_cert: Option<ClientCert>,
}

/// A verified client certificate.
#[derive(Debug)]
pub struct ClientCert {
    pub pem: String,
    /// RFC 4514 strings; empty when the certificate could not be parsed for them.
    pub subject: String,
    pub issuer: String,
}

impl TlsInfo {
    pub fn from_connection(conn: &ServerConnection) -> TlsInfo {
        let protocol = match conn.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
            Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
            _ => "",
        };
        let cipher = conn
            .negotiated_cipher_suite()
            .and_then(|s| s.suite().as_str())
            .unwrap_or("")
            .to_string();
        let client_cert = conn
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|der| client_cert(der.as_ref()));
        TlsInfo {
            protocol,
            cipher,
            version_code: conn.protocol_version().map_or(0, u16::from),
            cipher_code: conn
                .negotiated_cipher_suite()
                .map_or(0, |s| u16::from(s.suite())),
            client_cert,
        }
    }
}

pub(crate) fn client_cert(der: &[u8]) -> ClientCert {
    use x509_cert::der::{Decode, EncodePem};
    let parsed = x509_cert::Certificate::from_der(der).ok();
    let pem = parsed
        .as_ref()
        .and_then(|c| c.to_pem(x509_cert::der::pem::LineEnding::LF).ok())
        .unwrap_or_default();
    let (subject, issuer) = parsed
        .map(|c| {
            (
                c.tbs_certificate.subject.to_string(),
                c.tbs_certificate.issuer.to_string(),
            )
        })
        .unwrap_or_default();
    ClientCert {
        pem,
        subject,
        issuer,
    }
}
