//! TLS on the io executor: rustls (on ring) over glommio's TCP streams. The broker's
//! certificate is read again when its file changes, so a rotated certificate takes effect
//! without a restart.

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use futures_lite::{AsyncRead, AsyncWrite};
use glommio::net::TcpStream;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use tracing::{info, warn};

use crate::listeners::{ClientAuth, SslSettings};

/// The longest a TLS handshake may take (a client's, or `connections.max.idle.ms` if shorter).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a handshake may look at the certificate file's modification time.
const RELOAD_CHECK_INTERVAL: Duration = Duration::from_secs(1);

// ring's provider lacks the post-quantum key exchange; aws-lc-rs has it but needs cmake and a
// C toolchain to build, and Kafka clients (OpenSSL, JSSE) do not offer it to a broker yet.
#[allow(deprecated)]
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The TLS side of a listener, or why its settings cannot serve.
pub fn acceptor(listener: &str, settings: &SslSettings) -> Result<futures_rustls::TlsAcceptor, String> {
    let named = |e: String| format!("listener {listener}: {e}");
    let provider = provider();
    let versions = protocol_versions(settings);
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .map_err(|e| named(format!("ssl.enabled.protocols: {e}")))?;
    let builder = match (&settings.truststore, settings.client_auth) {
        (Some(truststore), auth) if auth != ClientAuth::None => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in read_certificates(truststore).map_err(named)? {
                roots.add(cert).map_err(|e| named(format!("ssl.truststore.location {}: {e}", truststore.display())))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
            let verifier = if auth == ClientAuth::Requested { verifier.allow_unauthenticated() } else { verifier };
            builder.with_client_cert_verifier(verifier.build().map_err(|e| named(format!("ssl.truststore.location: {e}")))?)
        }
        _ => builder.with_no_client_auth(),
    };
    let resolver = ReloadingCertificate::new(settings.keystore.clone(), provider).map_err(named)?;
    let mut config = builder.with_cert_resolver(Arc::new(resolver));
    // Kafka clients send no ALPN; none is required.
    config.alpn_protocols.clear();
    Ok(futures_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// `ssl.enabled.protocols` as rustls names them.
fn protocol_versions(settings: &SslSettings) -> Vec<&'static rustls::SupportedProtocolVersion> {
    [settings.tls13.then_some(&rustls::version::TLS13), settings.tls12.then_some(&rustls::version::TLS12)]
        .into_iter()
        .flatten()
        .collect()
}

fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no PEM certificate in it", path.display()));
    }
    Ok(certs)
}

/// The key and certificate chain of `ssl.keystore.location`, checked to belong together.
fn load_certified_key(path: &Path, provider: &CryptoProvider) -> Result<Arc<CertifiedKey>, String> {
    let certs = read_certificates(path).map_err(|e| format!("ssl.keystore.location {e}"))?;
    let key = PrivateKeyDer::from_pem_file(path)
        .map_err(|e| format!("ssl.keystore.location {}: no unencrypted PEM private key in it ({e})", path.display()))?;
    let key = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| format!("ssl.keystore.location {}: {e}", path.display()))?;
    let certified = CertifiedKey::new(certs, key);
    certified
        .keys_match()
        .map_err(|e| format!("ssl.keystore.location {}: the private key does not match the certificate ({e})", path.display()))?;
    Ok(Arc::new(certified))
}

/// The broker's certificate, read again when its file's modification time changes (checked at
/// most once a second, on a handshake). A file that no longer loads keeps the previous
/// certificate in use, and says why in the log.
#[derive(Debug)]
struct ReloadingCertificate {
    path: PathBuf,
    provider: Arc<CryptoProvider>,
    current: Mutex<Current>,
}

#[derive(Debug)]
struct Current {
    key: Arc<CertifiedKey>,
    modified: Option<SystemTime>,
    checked: Instant,
}

impl ReloadingCertificate {
    fn new(path: PathBuf, provider: Arc<CryptoProvider>) -> Result<Self, String> {
        let modified = modified(&path);
        let key = load_certified_key(&path, &provider)?;
        Ok(ReloadingCertificate { path, provider, current: Mutex::new(Current { key, modified, checked: Instant::now() }) })
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

impl ResolvesServerCert for ReloadingCertificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        if current.checked.elapsed() >= RELOAD_CHECK_INTERVAL {
            current.checked = Instant::now();
            let now = modified(&self.path);
            if now != current.modified {
                current.modified = now;
                match load_certified_key(&self.path, &self.provider) {
                    Ok(key) => {
                        info!(path = %self.path.display(), "loaded the changed TLS certificate");
                        current.key = key;
                    }
                    Err(e) => warn!("keeping the previous TLS certificate: {e}"),
                }
            }
        }
        Some(current.key.clone())
    }
}

/// The client side of TLS between brokers and to the controllers: the listener's keystore is
/// the broker's client certificate, its truststore the CAs a peer's certificate must chain to.
pub fn connector(listener: &str, settings: &SslSettings) -> Result<futures_rustls::TlsConnector, String> {
    let named = |e: String| format!("listener {listener}: {e}");
    let provider = provider();
    let truststore = settings
        .truststore
        .as_ref()
        .ok_or_else(|| named("ssl.truststore.location is required to connect to other brokers over TLS".into()))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in read_certificates(truststore).map_err(named)? {
        roots.add(cert).map_err(|e| named(format!("ssl.truststore.location {}: {e}", truststore.display())))?;
    }
    let versions = protocol_versions(settings);
    let key = load_certified_key(&settings.keystore, &provider).map_err(named)?;
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&versions)
        .map_err(|e| named(format!("ssl.enabled.protocols: {e}")))?
        .with_root_certificates(roots)
        .with_client_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(key)));
    Ok(futures_rustls::TlsConnector::from(Arc::new(config)))
}

/// TLS between this node and its peers, from the inter-broker and controller listeners' settings.
#[derive(Default)]
pub struct PeerTls {
    /// To other brokers' inter-broker listener (follower fetches, transaction markers).
    pub inter_broker: Option<futures_rustls::TlsConnector>,
    /// To the quorum's controller listeners.
    pub controller_client: Option<futures_rustls::TlsConnector>,
    /// This node's controller listener.
    pub controller_server: Option<futures_rustls::TlsAcceptor>,
}

impl PeerTls {
    pub fn new(config: &crate::config::ServerConfig) -> Result<PeerTls, String> {
        let inter_broker_name = config.listener_settings.inter_broker_listener();
        let inter_broker = config.listeners.iter().find(|l| l.name == inter_broker_name);
        let controller = config.controller_listener.as_ref();
        Ok(PeerTls {
            inter_broker: inter_broker.and_then(|l| Some((l, l.ssl.as_ref()?))).map(|(l, ssl)| connector(&l.name, ssl)).transpose()?,
            controller_client: controller.and_then(|l| Some((l, l.ssl.as_ref()?))).map(|(l, ssl)| connector(&l.name, ssl)).transpose()?,
            controller_server: controller.and_then(|l| Some((l, l.ssl.as_ref()?))).map(|(l, ssl)| acceptor(&l.name, ssl)).transpose()?,
        })
    }
}

/// Opens a connection to another broker or controller, over TLS when `tls` is given. The
/// peer's certificate must name its IP address (peers are dialled by address).
pub async fn connect(addr: std::net::SocketAddr, tls: Option<&futures_rustls::TlsConnector>) -> std::io::Result<Stream> {
    let stream = TcpStream::connect(addr).await?;
    let _ = stream.set_nodelay(true);
    match tls {
        None => Ok(Stream::Plain(stream)),
        Some(connector) => {
            let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
            Ok(Stream::TlsClient(Box::new(connector.connect(name, stream).await?)))
        }
    }
}

/// The server side of a TLS handshake, bounded: a client that stalls in it holds a connection.
pub async fn accept(acceptor: &futures_rustls::TlsAcceptor, stream: TcpStream, bound: Duration) -> Result<Stream, String> {
    stream.set_read_timeout(Some(bound)).map_err(|e| e.to_string())?;
    stream.set_write_timeout(Some(bound)).map_err(|e| e.to_string())?;
    let tls = acceptor.accept(stream).await.map_err(|e| match e.kind() {
        std::io::ErrorKind::TimedOut => format!("no handshake within {} ms", bound.as_millis()),
        _ => e.to_string(),
    })?;
    let tcp = tls.get_ref().0;
    tcp.set_read_timeout(None).map_err(|e| e.to_string())?;
    tcp.set_write_timeout(None).map_err(|e| e.to_string())?;
    Ok(Stream::Tls(Box::new(tls)))
}

/// A connection in the clear or over TLS: a client's (server side), or one this broker
/// opened to a peer (client side).
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<futures_rustls::server::TlsStream<TcpStream>>),
    TlsClient(Box<futures_rustls::client::TlsStream<TcpStream>>),
}

impl Stream {
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(s) => s.get_ref().0,
            Stream::TlsClient(s) => s.get_ref().0,
        }
    }

    /// The subject of the client's certificate, if it presented one.
    pub fn peer_subject(&self) -> Option<Result<String, &'static str>> {
        let Stream::Tls(s) = self else { return None };
        let leaf = s.get_ref().1.peer_certificates()?.first()?;
        Some(odradek_core::principal::certificate_subject(leaf))
    }
}

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Stream::TlsClient(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Stream::TlsClient(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Stream::TlsClient(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_close(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_close(cx),
            Stream::TlsClient(s) => Pin::new(s.as_mut()).poll_close(cx),
        }
    }
}
