//! TLS for Remoting connections (and the broker's HA port), with rustls.
//!
//! **Servers** take RocketMQ's modes (`tls.server.mode`): `disabled` (plaintext only, the
//! default), `permissive` (TLS and plaintext on the same port: a connection whose first byte
//! is a TLS handshake record, 0x16, is served over TLS, any other plaintext; for migrating a
//! cluster) and `enforcing` (TLS only: a plaintext peer fails the handshake and is closed). The
//! certificate chain and private key are PEM files.
//!
//! **Clients** (`tls.enable` in RocketMQ) connect over TLS and verify the server's certificate
//! against a PEM file of trusted certificates (`tls.client.trustCertPath`), the server's name
//! being the host of the address dialled (an IP address or a DNS name). Without a trust file
//! nothing is verified: the connection is encrypted but not authenticated (RocketMQ's
//! `tls.test.mode.enable`); the cluster secret ([`crate::trust`]) still authenticates
//! servers to each other.
//!
//! A TLS handshake must finish within the server's frame timeout; a failed one is logged (at
//! most once a second) and the connection closed.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// The first byte of a TLS handshake record.
const TLS_HANDSHAKE: u8 = 0x16;

/// A server's TLS mode (`tls.server.mode`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// Plaintext only.
    #[default]
    Disabled,
    /// TLS and plaintext on the same port.
    Permissive,
    /// TLS only.
    Enforcing,
}

impl FromStr for TlsMode {
    type Err = BadTlsMode;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "disabled" => Ok(TlsMode::Disabled),
            "permissive" => Ok(TlsMode::Permissive),
            "enforcing" => Ok(TlsMode::Enforcing),
            _ => Err(BadTlsMode(s.to_string())),
        }
    }
}

/// A TLS mode that is none of disabled, permissive, enforcing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown TLS mode {0:?}: use disabled, permissive or enforcing")]
pub struct BadTlsMode(pub String);

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the TLS {what} {path}: {source}")]
    Read {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the TLS {what} {path} holds no PEM {what}")]
    Empty { what: &'static str, path: PathBuf },
    #[error("TLS mode {0:?} needs `cert` and `key` (PEM files)")]
    NoCertificate(TlsMode),
    #[error("cannot use the TLS certificate and key: {0}")]
    Rustls(#[from] rustls::Error),
}

/// A server's TLS settings (the `[tls]` table of the broker, NameServer and controller).
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerTlsConfig {
    /// `disabled`, `permissive` or `enforcing` (`tls.server.mode`).
    pub mode: TlsMode,
    /// The certificate chain, leaf first, PEM (`tls.server.certPath`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert: Option<PathBuf>,
    /// The private key, PEM: PKCS#8, PKCS#1 or SEC1 (`tls.server.keyPath`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
}

impl fmt::Debug for ServerTlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTlsConfig")
            .field("mode", &self.mode)
            .field("cert", &self.cert)
            .field("key", &self.key.as_ref().map(|_| "<path>"))
            .finish()
    }
}

impl ServerTlsConfig {
    /// TLS in `mode` with the certificate and key at these paths.
    pub fn new(mode: TlsMode, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        ServerTlsConfig {
            mode,
            cert: Some(cert.into()),
            key: Some(key.into()),
        }
    }

    /// Loads the certificate and key; None when TLS is disabled.
    pub fn load(&self) -> Result<Option<ServerTls>, TlsError> {
        if self.mode == TlsMode::Disabled {
            return Ok(None);
        }
        let (Some(cert), Some(key)) = (&self.cert, &self.key) else {
            return Err(TlsError::NoCertificate(self.mode));
        };
        let chain = certificates(cert, "certificate")?;
        let key_pem = read(key, "key")?;
        let key_der = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| TlsError::Empty {
            what: "key",
            path: key.clone(),
        })?;
        let config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(chain, key_der)?;
        Ok(Some(ServerTls {
            mode: self.mode,
            acceptor: TlsAcceptor::from(Arc::new(config)),
        }))
    }
}

/// A loaded server TLS configuration.
#[derive(Clone)]
pub struct ServerTls {
    mode: TlsMode,
    acceptor: TlsAcceptor,
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTls")
            .field("mode", &self.mode)
            .finish()
    }
}

impl ServerTls {
    pub fn mode(&self) -> TlsMode {
        self.mode
    }

    /// Serves an accepted connection as the mode says: TLS, plaintext, or (permissive) by its
    /// first byte. Fails if the handshake fails or does not finish `within`.
    pub async fn accept(&self, stream: TcpStream, within: Duration) -> io::Result<Transport> {
        let handshake = async {
            if self.mode == TlsMode::Permissive && !starts_with_tls(&stream).await? {
                return Ok(Transport::Plain(stream));
            }
            let tls = self.acceptor.accept(stream).await?;
            Ok(Transport::Server(Box::new(tls)))
        };
        match tokio::time::timeout(within, handshake).await {
            Ok(result) => result,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "TLS handshake not finished in time",
            )),
        }
    }
}

/// Whether `bytes` open a TLS record (a handshake or an alert, protocol version 3.x): what a
/// server that takes TLS only answers a plaintext client with.
pub(crate) fn is_tls_record(bytes: &[u8]) -> bool {
    const TLS_ALERT: u8 = 0x15;
    matches!(bytes, [TLS_ALERT | TLS_HANDSHAKE, 3, minor, ..] if *minor <= 4)
}

/// Whether the first byte the peer sends opens a TLS handshake (without consuming it).
async fn starts_with_tls(stream: &TcpStream) -> io::Result<bool> {
    let mut first = [0u8; 1];
    let n = stream.peek(&mut first).await?;
    Ok(n == 1 && first[0] == TLS_HANDSHAKE)
}

/// A client's TLS settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClientTlsConfig {
    /// Connect over TLS (`tls.enable`).
    pub enable: bool,
    /// Trusted certificates, PEM (`tls.client.trustCertPath`); without it the server's
    /// certificate is not verified (`tls.test.mode.enable`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trust_cert: Option<PathBuf>,
}

impl ClientTlsConfig {
    /// TLS verified against the certificates in `trust_cert`.
    pub fn trusting(trust_cert: impl Into<PathBuf>) -> Self {
        ClientTlsConfig {
            enable: true,
            trust_cert: Some(trust_cert.into()),
        }
    }

    /// TLS without verifying the server (encrypted, not authenticated).
    pub fn unverified() -> Self {
        ClientTlsConfig {
            enable: true,
            trust_cert: None,
        }
    }

    /// Loads the trusted certificates; None when TLS is off.
    pub fn load(&self) -> Result<Option<ClientTls>, TlsError> {
        if !self.enable {
            return Ok(None);
        }
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?;
        let config = match &self.trust_cert {
            Some(path) => {
                let mut roots = rustls::RootCertStore::empty();
                for cert in certificates(path, "trusted certificate")? {
                    roots.add(cert)?;
                }
                builder.with_root_certificates(roots).with_no_client_auth()
            }
            None => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider())))
                .with_no_client_auth(),
        };
        Ok(Some(ClientTls {
            connector: TlsConnector::from(Arc::new(config)),
            verified: self.trust_cert.is_some(),
        }))
    }
}

/// A loaded client TLS configuration.
#[derive(Clone)]
pub struct ClientTls {
    connector: TlsConnector,
    verified: bool,
}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTls")
            .field("verified", &self.verified)
            .finish()
    }
}

impl ClientTls {
    /// Runs the TLS handshake over `stream` to `addr` (`host:port`; the host names the server).
    pub async fn connect(&self, stream: TcpStream, addr: &str) -> io::Result<Transport> {
        let host = addr
            .rsplit_once(':')
            .map_or(addr, |(host, _)| host)
            .trim_start_matches('[')
            .trim_end_matches(']');
        let name = ServerName::try_from(host.to_string()).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{host:?} is not a server name for TLS: {e}"),
            )
        })?;
        let tls = self.connector.connect(name, stream).await?;
        Ok(Transport::Client(Box::new(tls)))
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(path: &Path, what: &'static str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_path_buf(),
        source,
    })
}

fn certificates(path: &Path, what: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path, what)?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&pem)
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err(TlsError::Empty {
            what,
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

/// Accepts any server certificate (TLS without a trust file): the handshake's signatures are
/// still checked, so the session keys belong to whoever holds the certificate's key.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A connection's byte stream: plaintext TCP, or TLS over it (server or client side).
pub enum Transport {
    Plain(TcpStream),
    Server(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    Client(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl fmt::Debug for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self {
            Transport::Plain(_) => "plain",
            Transport::Server(_) => "tls-server",
            Transport::Client(_) => "tls-client",
        };
        f.debug_tuple("Transport").field(&kind).finish()
    }
}

impl Transport {
    fn tcp(&self) -> &TcpStream {
        match self {
            Transport::Plain(s) => s,
            Transport::Server(s) => s.get_ref().0,
            Transport::Client(s) => s.get_ref().0,
        }
    }

    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.tcp().peer_addr()
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.tcp().local_addr()
    }

    pub fn set_nodelay(&self, on: bool) -> io::Result<()> {
        self.tcp().set_nodelay(on)
    }

    /// Whether the bytes travel over TLS.
    pub fn is_tls(&self) -> bool {
        !matches!(self, Transport::Plain(_))
    }
}

impl AsyncRead for Transport {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Transport::Server(s) => Pin::new(s).poll_read(cx, buf),
            Transport::Client(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Transport {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Transport::Server(s) => Pin::new(s).poll_write(cx, buf),
            Transport::Client(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_flush(cx),
            Transport::Server(s) => Pin::new(s).poll_flush(cx),
            Transport::Client(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Transport::Server(s) => Pin::new(s).poll_shutdown(cx),
            Transport::Client(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::is_tls_record;

    #[test]
    fn tls_records_are_told_from_remoting_frames() {
        // A TLS 1.2/1.3 alert and handshake record headers.
        assert!(is_tls_record(&[0x15, 3, 3, 0, 2, 2, 50]));
        assert!(is_tls_record(&[0x16, 3, 1, 0, 0xa5]));
        // A Remoting frame's length word (a small frame) and too short a buffer.
        assert!(!is_tls_record(&[0, 0, 0, 42, 0, 0, 0, 30]));
        assert!(!is_tls_record(&[0x15, 3]));
        assert!(!is_tls_record(&[0x15, 2, 0]));
    }
}
