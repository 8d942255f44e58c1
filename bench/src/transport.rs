//! The byte stream to a broker: plain TCP, or TLS through rustls (Kafka's `security.protocol`
//! PLAINTEXT or SSL). The Kafka client above sees `Read` and `Write` either way.
//!
//! A producer splits its connection into a reader and a writer thread (`Link::split`). Over
//! TLS both halves share one `rustls::ClientConnection` behind a mutex that is held only while
//! bytes pass through rustls, never while a socket blocks:
//!
//! 1. the reader reads ciphertext from its own clone of the socket, unlocked, then locks to
//!    `read_tls`, `process_new_packets` and take the plaintext out;
//! 2. the writer locks to seal plaintext and `write_tls` the records into a buffer, then
//!    writes the buffer to the socket unlocked.
//!
//! Only the writer writes to the socket, so records leave in the order rustls sealed them.
//! What rustls queues while the reader decrypts (an alert, an answer to a KeyUpdate) goes out
//! ahead of the writer's next request. Plaintext links take no lock at all.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use serde::{Deserialize, Serialize};

/// How long connecting, and then the TLS handshake, may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Ciphertext read per system call by a reader half: a few TLS records (16 KiB each at most).
const READ_CHUNK_BYTES: usize = 64 << 10;

/// Kafka's `security.protocol`, as far as the bench speaks it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
pub enum SecurityProtocol {
    #[default]
    #[value(name = "PLAINTEXT")]
    #[serde(rename = "PLAINTEXT")]
    Plaintext,
    #[value(name = "SSL")]
    #[serde(rename = "SSL")]
    Ssl,
}

impl std::fmt::Display for SecurityProtocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SecurityProtocol::Plaintext => "PLAINTEXT",
            SecurityProtocol::Ssl => "SSL",
        })
    }
}

/// How every connection of a run reaches a broker. Cloning shares the TLS configuration.
#[derive(Clone, Default)]
pub enum Security {
    #[default]
    Plaintext,
    Ssl(Arc<ClientConfig>),
}

impl Security {
    /// The security of `protocol`, from Kafka's `ssl.truststore.location` (`ca`) and, for a
    /// broker that asks for a client certificate, `ssl.keystore.location` split into the
    /// certificate chain and its key (the two may name one file holding both).
    pub fn new(
        protocol: SecurityProtocol,
        ca: Option<&Path>,
        cert: Option<&Path>,
        key: Option<&Path>,
    ) -> Result<Security, String> {
        match protocol {
            SecurityProtocol::Plaintext => {
                // A TLS option next to PLAINTEXT most likely means a forgotten
                // --security-protocol: refuse rather than measure plaintext under a TLS label.
                if ca.is_some() || cert.is_some() || key.is_some() {
                    return Err("--ssl-ca, --ssl-cert and --ssl-key need --security-protocol SSL".into());
                }
                Ok(Security::Plaintext)
            }
            SecurityProtocol::Ssl => {
                let ca = ca.ok_or("--security-protocol SSL needs --ssl-ca (there is no system trust store here)")?;
                let mut roots = RootCertStore::empty();
                for cert in read_certificates(ca)? {
                    roots.add(cert).map_err(|e| format!("--ssl-ca {}: {e}", ca.display()))?;
                }
                let builder = ClientConfig::builder_with_provider(provider())
                    .with_safe_default_protocol_versions()
                    .map_err(|e| e.to_string())?
                    .with_root_certificates(roots);
                let config = match (cert, key) {
                    (None, None) => builder.with_no_client_auth(),
                    (Some(cert), Some(key)) => {
                        let chain = read_certificates(cert)?;
                        let key = PrivateKeyDer::from_pem_file(key)
                            .map_err(|e| format!("--ssl-key {}: no unencrypted PEM private key ({e})", key.display()))?;
                        builder.with_client_auth_cert(chain, key).map_err(|e| format!("--ssl-cert/--ssl-key: {e}"))?
                    }
                    _ => return Err("--ssl-cert and --ssl-key go together".into()),
                };
                Ok(Security::Ssl(Arc::new(config)))
            }
        }
    }

    pub fn protocol(&self) -> SecurityProtocol {
        match self {
            Security::Plaintext => SecurityProtocol::Plaintext,
            Security::Ssl(_) => SecurityProtocol::Ssl,
        }
    }
}

// ring's provider lacks the post-quantum key exchange, which is why it is deprecated; it
// builds without cmake, unlike aws-lc-rs, and is the provider the broker uses too.
#[allow(deprecated)]
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
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

/// The name a broker's certificate must carry: the host or IP of the address it was reached
/// at, as Kafka's clients verify it (`ssl.endpoint.identification.algorithm=https`).
fn server_name(address: &str) -> io::Result<ServerName<'static>> {
    let host = address.rsplit_once(':').map_or(address, |(host, _port)| host);
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    ServerName::try_from(host.to_owned())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{host} as a TLS server name: {e}")))
}

/// A connection to one broker, one request at a time (or taken apart with `split`).
pub enum Link {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Link {
    /// Connects to `host:port` and, over TLS, completes the handshake before returning.
    pub fn connect(address: &str, security: &Security) -> io::Result<Link> {
        let addr = address.to_socket_addrs()?.next().ok_or_else(|| {
            io::Error::new(io::ErrorKind::NotFound, format!("{address} resolves to nothing"))
        })?;
        let mut socket = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)?;
        // Batching is the client's job; Nagle would add a delay to every small request.
        socket.set_nodelay(true)?;
        let config = match security {
            Security::Plaintext => return Ok(Link::Plain(socket)),
            Security::Ssl(config) => config.clone(),
        };
        let mut tls = ClientConnection::new(config, server_name(address)?)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        // A plaintext listener takes the ClientHello for the start of a huge request and
        // waits for the rest: without a deadline the handshake would never end.
        socket.set_read_timeout(Some(CONNECT_TIMEOUT))?;
        while tls.is_handshaking() {
            tls.complete_io(&mut socket)?;
        }
        socket.set_read_timeout(None)?;
        Ok(Link::Tls(Box::new(StreamOwned::new(tls, socket))))
    }

    /// A read that waits longer fails with `WouldBlock` or `TimedOut`, as a socket's does.
    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        match self {
            Link::Plain(socket) => socket.set_read_timeout(timeout),
            Link::Tls(stream) => stream.sock.set_read_timeout(timeout),
        }
    }

    /// Halves for a reader thread and a writer thread. Socket options such as the read
    /// timeout stay shared: both halves are the same socket.
    pub fn split(self) -> io::Result<(LinkReader, LinkWriter)> {
        match self {
            Link::Plain(socket) => Ok((LinkReader::Plain(socket.try_clone()?), LinkWriter::Plain(socket))),
            Link::Tls(stream) => {
                let (mut tls, socket) = stream.into_parts();
                // Records already read off the socket would otherwise wait for more to arrive.
                tls.process_new_packets().map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                let mut plaintext = Vec::new();
                drain_plaintext(&mut tls, &mut plaintext)?;
                let tls = Arc::new(Mutex::new(tls));
                let reader = TlsReader {
                    socket: socket.try_clone()?,
                    tls: tls.clone(),
                    ciphertext: vec![0; READ_CHUNK_BYTES].into_boxed_slice(),
                    plaintext,
                    consumed: 0,
                };
                let writer = TlsWriter { socket, tls, ciphertext: Vec::new() };
                Ok((LinkReader::Tls(Box::new(reader)), LinkWriter::Tls(writer)))
            }
        }
    }
}

impl Read for Link {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Link::Plain(socket) => socket.read(buf),
            Link::Tls(stream) => stream.read(buf),
        }
    }
}

impl Write for Link {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Link::Plain(socket) => socket.write(buf),
            Link::Tls(stream) => stream.write(buf),
        }
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Link::Plain(socket) => socket.write_all(buf),
            Link::Tls(stream) => stream.write_all(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Link::Plain(socket) => socket.flush(),
            Link::Tls(stream) => stream.flush(),
        }
    }
}

/// The reading half of a split `Link`.
pub enum LinkReader {
    Plain(TcpStream),
    Tls(Box<TlsReader>),
}

impl LinkReader {
    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.socket().set_read_timeout(timeout)
    }

    /// Ends the connection both ways: the writer's next write fails.
    pub fn shutdown(&self) -> io::Result<()> {
        self.socket().shutdown(Shutdown::Both)
    }

    fn socket(&self) -> &TcpStream {
        match self {
            LinkReader::Plain(socket) => socket,
            LinkReader::Tls(reader) => &reader.socket,
        }
    }
}

impl Read for LinkReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            LinkReader::Plain(socket) => socket.read(buf),
            LinkReader::Tls(reader) => reader.read(buf),
        }
    }
}

/// The writing half of a split `Link`.
pub enum LinkWriter {
    Plain(TcpStream),
    Tls(TlsWriter),
}

impl Write for LinkWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            LinkWriter::Plain(socket) => socket.write(buf),
            LinkWriter::Tls(writer) => writer.write(buf),
        }
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            LinkWriter::Plain(socket) => socket.write_all(buf),
            LinkWriter::Tls(writer) => writer.write_all(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            LinkWriter::Plain(socket) => socket.flush(),
            LinkWriter::Tls(writer) => writer.flush(),
        }
    }
}

pub struct TlsReader {
    socket: TcpStream,
    tls: Arc<Mutex<ClientConnection>>,
    ciphertext: Box<[u8]>,
    /// Decrypted and not yet read; `consumed` bytes of it are.
    plaintext: Vec<u8>,
    consumed: usize,
}

impl Read for TlsReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.consumed == self.plaintext.len() {
            // Blocks (up to the read timeout) without the lock: the writer keeps writing.
            let n = self.socket.read(&mut self.ciphertext)?;
            if n == 0 {
                return Ok(0);
            }
            self.plaintext.clear();
            self.consumed = 0;
            let mut tls = lock(&self.tls)?;
            let mut ciphertext = &self.ciphertext[..n];
            while !ciphertext.is_empty() {
                // rustls takes what its buffers hold; the rest goes in on the next turn,
                // once the plaintext of this one is out.
                let taken = tls.read_tls(&mut ciphertext)?;
                let state = tls.process_new_packets().map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                drain_plaintext(&mut tls, &mut self.plaintext)?;
                if taken == 0 || state.peer_has_closed() {
                    // close_notify: nothing after it is read.
                    break;
                }
            }
        }
        let n = buf.len().min(self.plaintext.len() - self.consumed);
        buf[..n].copy_from_slice(&self.plaintext[self.consumed..self.consumed + n]);
        self.consumed += n;
        Ok(n)
    }
}

pub struct TlsWriter {
    socket: TcpStream,
    tls: Arc<Mutex<ClientConnection>>,
    /// Sealed records on their way to the socket; kept to reuse its allocation.
    ciphertext: Vec<u8>,
}

impl Write for TlsWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let accepted = {
            let mut tls = lock(&self.tls)?;
            // rustls seals up to its buffer limit (64 KiB) at a time: a large request goes
            // out in pieces, and the reader gets the lock between them.
            let accepted = tls.writer().write(buf)?;
            while tls.wants_write() {
                tls.write_tls(&mut self.ciphertext)?;
            }
            accepted
        };
        let written = self.socket.write_all(&self.ciphertext);
        self.ciphertext.clear();
        written?;
        Ok(accepted)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn lock(tls: &Mutex<ClientConnection>) -> io::Result<MutexGuard<'_, ClientConnection>> {
    // The other half panicked inside rustls: its state is not to be trusted.
    tls.lock().map_err(|_| io::Error::other("the other half of the TLS connection panicked"))
}

fn drain_plaintext(tls: &mut ClientConnection, out: &mut Vec<u8>) -> io::Result<()> {
    match tls.reader().read_to_end(out) {
        Ok(_) => Ok(()),
        // No more for now: the rest of the record is still on its way.
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;
    use std::path::PathBuf;
    use std::thread::JoinHandle;

    use super::*;

    /// Test certificates (valid until 2125): a CA, a broker certificate for IP 127.0.0.1 and a
    /// client certificate it signed, and an unrelated CA.
    fn testdata(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("src/testdata").join(name)
    }

    fn ssl(cert: Option<&str>) -> Security {
        let cert = cert.map(testdata);
        Security::new(SecurityProtocol::Ssl, Some(&testdata("ca.pem")), cert.as_deref(), cert.as_deref()).unwrap()
    }

    /// A size-prefixed frame, prefix included.
    fn read_frame(stream: &mut impl Read) -> io::Result<Vec<u8>> {
        let mut frame = vec![0u8; 4];
        stream.read_exact(&mut frame)?;
        let size = u32::from_be_bytes(frame[..4].try_into().unwrap()) as usize;
        frame.resize(4 + size, 0);
        stream.read_exact(&mut frame[4..])?;
        Ok(frame)
    }

    fn frame(i: usize) -> Vec<u8> {
        // Sizes from a few bytes to well past a TLS record and rustls' 64 KiB send buffer.
        let size = (i * 7919) % 300_000 + 1;
        let mut frame = (size as u32).to_be_bytes().to_vec();
        frame.extend((0..size).map(|j| (i + j) as u8));
        frame
    }

    /// A TLS broker stand-in for one connection that answers each frame with itself.
    fn echo_broker(client_auth: bool) -> (String, JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let keystore = testdata("broker.pem");
        let chain = read_certificates(&keystore).unwrap();
        let key = PrivateKeyDer::from_pem_file(&keystore).unwrap();
        let builder = rustls::ServerConfig::builder_with_provider(provider()).with_safe_default_protocol_versions().unwrap();
        let builder = if client_auth {
            let mut roots = RootCertStore::empty();
            for cert in read_certificates(&testdata("ca.pem")).unwrap() {
                roots.add(cert).unwrap();
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider());
            builder.with_client_cert_verifier(verifier.build().unwrap())
        } else {
            builder.with_no_client_auth()
        };
        let config = Arc::new(builder.with_single_cert(chain, key).unwrap());
        let broker = std::thread::spawn(move || {
            let (socket, _) = listener.accept().unwrap();
            let mut stream = StreamOwned::new(rustls::ServerConnection::new(config).unwrap(), socket);
            // Until the client goes away or the handshake fails.
            while let Ok(frame) = read_frame(&mut stream) {
                if stream.write_all(&frame).is_err() {
                    break;
                }
            }
        });
        (address, broker)
    }

    #[test]
    fn tls_halves_carry_frames_both_ways_at_once() {
        let (address, broker) = echo_broker(false);
        let mut link = Link::connect(&address, &ssl(None)).unwrap();
        // One request at a time first, as version negotiation does before the split.
        link.write_all(&frame(1)).unwrap();
        assert_eq!(read_frame(&mut link).unwrap(), frame(1));
        let (mut reader, mut writer) = link.split().unwrap();
        const FRAMES: usize = 200;
        let writing = std::thread::spawn(move || {
            for i in 0..FRAMES {
                writer.write_all(&frame(i)).unwrap();
            }
            writer
        });
        for i in 0..FRAMES {
            assert_eq!(read_frame(&mut reader).unwrap(), frame(i), "frame {i}");
        }
        let _writer = writing.join().unwrap();
        // Nothing more is coming: the consumer's read timeout must still fire.
        reader.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let timeout = read_frame(&mut reader).unwrap_err();
        assert!(matches!(timeout.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut), "{timeout}");
        reader.shutdown().unwrap();
        broker.join().unwrap();
    }

    #[test]
    fn a_broker_is_verified_by_the_address_it_is_reached_at() {
        let (address, broker) = echo_broker(false);
        let stranger = Security::new(SecurityProtocol::Ssl, Some(&testdata("other-ca.pem")), None, None).unwrap();
        let err = Link::connect(&address, &stranger).err().expect("a certificate from an unknown CA");
        assert!(err.to_string().contains("UnknownIssuer"), "{err}");
        broker.join().unwrap();

        // The certificate names 127.0.0.1, not localhost.
        let (address, broker) = echo_broker(false);
        let port = address.rsplit_once(':').unwrap().1;
        let err = Link::connect(&format!("localhost:{port}"), &ssl(None)).err().expect("a name mismatch");
        assert!(err.to_string().contains("not valid for name"), "{err}");
        broker.join().unwrap();
    }

    #[test]
    fn a_client_certificate_is_presented_when_given() {
        let (address, broker) = echo_broker(true);
        let mut link = Link::connect(&address, &ssl(Some("client.pem"))).unwrap();
        link.write_all(&frame(3)).unwrap();
        assert_eq!(read_frame(&mut link).unwrap(), frame(3));
        drop(link);
        broker.join().unwrap();

        // Over TLS 1.3 the client finishes its handshake first; the refusal comes after.
        let (address, broker) = echo_broker(true);
        let refused = Link::connect(&address, &ssl(None)).and_then(|mut link| {
            link.write_all(&frame(3))?;
            read_frame(&mut link)
        });
        assert!(refused.is_err());
        broker.join().unwrap();
    }

    #[test]
    fn options_name_one_security_protocol() {
        let ca = testdata("ca.pem");
        assert!(matches!(Security::new(SecurityProtocol::Plaintext, None, None, None), Ok(Security::Plaintext)));
        assert!(Security::new(SecurityProtocol::Plaintext, Some(&ca), None, None).is_err());
        assert!(Security::new(SecurityProtocol::Ssl, None, None, None).is_err());
        assert!(Security::new(SecurityProtocol::Ssl, Some(&ca), Some(&ca), None).is_err());
        assert!(Security::new(SecurityProtocol::Ssl, Some(&testdata("missing.pem")), None, None).is_err());
        let ssl = Security::new(SecurityProtocol::Ssl, Some(&ca), None, None).unwrap();
        assert_eq!(ssl.protocol(), SecurityProtocol::Ssl);
        assert_eq!(ssl.protocol().to_string(), "SSL");
    }

    #[test]
    fn server_names_come_from_host_or_ip() {
        let ip = |s: &str| matches!(server_name(s).unwrap(), ServerName::IpAddress(_));
        assert!(ip("127.0.0.1:9093"));
        assert!(ip("[::1]:9093"));
        assert!(matches!(server_name("broker-1.example.com:9093").unwrap(), ServerName::DnsName(_)));
    }
}
