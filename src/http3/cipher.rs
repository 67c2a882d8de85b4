//! The TLS 1.3 cipher suite a QUIC connection negotiated, for `SSL_CIPHER` and the
//! ASGI `tls` extension: quinn does not report it (its handshake data holds the ALPN
//! protocol and the server name only).
//!
//! Two thin wrappers find it out without changing what rustls and quinn do:
//! - the QUIC algorithm of each TLS 1.3 suite of the provider ([`noting_provider`])
//!   notes, on the thread that derives packet keys, which suite it belongs to;
//! - each connection's TLS session ([`Session`], started by [`ServerConfig`]) clears
//!   that note before every handshake step and keeps what the step noted: rustls
//!   derives the handshake and 1-RTT keys inside those steps, with the negotiated
//!   suite. (The Initial keys, which always use AES-128-GCM, are derived outside them.)
//!
//! The session's handshake data is then a [`Negotiated`] (instead of quinn's), which
//! [`suite_of`] reads.
//! Every other call goes to quinn's rustls session as is.

use std::any::Any;
use std::cell::Cell;
use std::sync::{Arc, OnceLock};

use quinn::crypto::{self as qc, rustls::QuicServerConfig};
use quinn::{ConnectionId, Side};
use quinn_proto::transport_parameters::TransportParameters;
use quinn_proto::TransportError;
use rustls::crypto::cipher::{AeadKey, Iv};
use rustls::crypto::CryptoProvider;
use rustls::quic::{Algorithm, HeaderProtectionKey, PacketKey};
use rustls::{CipherSuite, CipherSuiteCommon, SupportedCipherSuite, Tls13CipherSuite};

thread_local! {
    /// The suite whose packet keys this thread derived last (see the module docs).
    static DERIVED: Cell<Option<CipherSuite>> = const { Cell::new(None) };
}

/// A suite's QUIC algorithm that notes its use in [`DERIVED`].
struct Noting {
    suite: CipherSuite,
    inner: &'static dyn Algorithm,
}

impl Algorithm for Noting {
    fn packet_key(&self, key: AeadKey, iv: Iv) -> Box<dyn PacketKey> {
        DERIVED.with(|d| d.set(Some(self.suite)));
        self.inner.packet_key(key, iv)
    }

    fn header_protection_key(&self, key: AeadKey) -> Box<dyn HeaderProtectionKey> {
        self.inner.header_protection_key(key)
    }

    fn aead_key_len(&self) -> usize {
        self.inner.aead_key_len()
    }

    fn fips(&self) -> bool {
        self.inner.fips()
    }
}

/// The suites of `base` with [`Noting`] QUIC algorithms; made once per process (the
/// suites are `'static`, so they are leaked once, not per configuration).
fn noting_suites(base: &CryptoProvider) -> Vec<SupportedCipherSuite> {
    static SUITES: OnceLock<Vec<SupportedCipherSuite>> = OnceLock::new();
    SUITES
        .get_or_init(|| {
            base.cipher_suites
                .iter()
                .map(|s| match s {
                    SupportedCipherSuite::Tls13(t) if t.quic.is_some() => {
                        let quic: &'static dyn Algorithm = Box::leak(Box::new(Noting {
                            suite: t.common.suite,
                            inner: t.quic.expect("checked above"),
                        }));
                        let wrapped: &'static Tls13CipherSuite =
                            Box::leak(Box::new(Tls13CipherSuite {
                                common: CipherSuiteCommon {
                                    suite: t.common.suite,
                                    hash_provider: t.common.hash_provider,
                                    confidentiality_limit: t.common.confidentiality_limit,
                                },
                                hkdf_provider: t.hkdf_provider,
                                aead_alg: t.aead_alg,
                                quic: Some(quic),
                            }));
                        SupportedCipherSuite::Tls13(wrapped)
                    }
                    other => *other,
                })
                .collect()
        })
        .clone()
}

/// `base` (the ring provider of the TLS listeners) with suites that note their use.
pub fn noting_provider(base: CryptoProvider) -> CryptoProvider {
    CryptoProvider {
        cipher_suites: noting_suites(&base),
        ..base
    }
}

/// What the handshake data of a [`Session`] holds (in place of quinn's, whose ALPN
/// protocol and server name gristmill does not read).
pub struct Negotiated {
    pub suite: Option<CipherSuite>,
}

/// The suite of `conn`'s handshake, once it is done.
pub fn suite_of(conn: &quinn::Connection) -> Option<CipherSuite> {
    conn.handshake_data()?
        .downcast::<Negotiated>()
        .ok()
        .and_then(|n| n.suite)
}

/// quinn's rustls server configuration, starting [`Session`]s.
pub struct ServerConfig(pub Arc<QuicServerConfig>);

impl qc::ServerConfig for ServerConfig {
    fn initial_keys(
        &self,
        version: u32,
        dst_cid: &ConnectionId,
    ) -> Result<qc::Keys, qc::UnsupportedVersion> {
        self.0.initial_keys(version, dst_cid)
    }

    fn retry_tag(&self, version: u32, orig_dst_cid: &ConnectionId, packet: &[u8]) -> [u8; 16] {
        self.0.retry_tag(version, orig_dst_cid, packet)
    }

    fn start_session(
        self: Arc<Self>,
        version: u32,
        params: &TransportParameters,
    ) -> Box<dyn qc::Session> {
        Box::new(Session {
            inner: self.0.clone().start_session(version, params),
            suite: None,
        })
    }
}

/// quinn's rustls session, keeping the suite its handshake steps derived keys with.
pub struct Session {
    inner: Box<dyn qc::Session>,
    suite: Option<CipherSuite>,
}

impl Session {
    fn step<T>(&mut self, f: impl FnOnce(&mut dyn qc::Session) -> T) -> T {
        DERIVED.with(|d| d.set(None));
        let out = f(&mut *self.inner);
        if let Some(suite) = DERIVED.with(|d| d.take()) {
            self.suite = Some(suite);
        }
        out
    }
}

impl qc::Session for Session {
    fn initial_keys(&self, dst_cid: &ConnectionId, side: Side) -> qc::Keys {
        self.inner.initial_keys(dst_cid, side)
    }

    fn handshake_data(&self) -> Option<Box<dyn Any>> {
        // Ready when quinn's is.
        self.inner.handshake_data()?;
        Some(Box::new(Negotiated { suite: self.suite }))
    }

    fn peer_identity(&self) -> Option<Box<dyn Any>> {
        self.inner.peer_identity()
    }

    fn early_crypto(&self) -> Option<(Box<dyn qc::HeaderKey>, Box<dyn qc::PacketKey>)> {
        self.inner.early_crypto()
    }

    fn early_data_accepted(&self) -> Option<bool> {
        self.inner.early_data_accepted()
    }

    fn is_handshaking(&self) -> bool {
        self.inner.is_handshaking()
    }

    fn read_handshake(&mut self, buf: &[u8]) -> Result<bool, TransportError> {
        self.step(|s| s.read_handshake(buf))
    }

    fn transport_parameters(&self) -> Result<Option<TransportParameters>, TransportError> {
        self.inner.transport_parameters()
    }

    fn write_handshake(&mut self, buf: &mut Vec<u8>) -> Option<qc::Keys> {
        self.step(|s| s.write_handshake(buf))
    }

    fn next_1rtt_keys(&mut self) -> Option<qc::KeyPair<Box<dyn qc::PacketKey>>> {
        self.inner.next_1rtt_keys()
    }

    fn is_valid_retry(&self, orig_dst_cid: &ConnectionId, header: &[u8], payload: &[u8]) -> bool {
        self.inner.is_valid_retry(orig_dst_cid, header, payload)
    }

    fn export_keying_material(
        &self,
        output: &mut [u8],
        label: &[u8],
        context: &[u8],
    ) -> Result<(), qc::ExportKeyingMaterialError> {
        self.inner.export_keying_material(output, label, context)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn noting_provider_keeps_every_suite_in_order() {
        let base = rustls::crypto::ring::default_provider();
        let ids: Vec<_> = base.cipher_suites.iter().map(|s| s.suite()).collect();
        let noting = noting_provider(rustls::crypto::ring::default_provider());
        let got: Vec<_> = noting.cipher_suites.iter().map(|s| s.suite()).collect();
        assert_eq!(got, ids);
        for s in &noting.cipher_suites {
            if let SupportedCipherSuite::Tls13(t) = s {
                assert!(
                    t.quic.is_some(),
                    "{:?} lost its QUIC algorithm",
                    t.common.suite
                );
            }
        }
    }
}
