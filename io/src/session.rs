//! A client connection's identity: the listener it came in on, and the principal it has proved,
//! by its TLS certificate or by SASL (SaslHandshake v1, then SaslAuthenticate, as Kafka's
//! SaslServerAuthenticator runs it). The exchanges themselves are `odradek_core::sasl`.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse};
use kafka_protocol::protocol::StrBytes;
use odradek_core::broker::authz::{self, Access};
use odradek_core::controller::MetadataImage;
use odradek_core::principal;
use odradek_core::sasl::{Credentials, Mechanism, SaslServer, ScramCredential, Step};
use odradek_core::wire::{self, Request, RequestError};
use odradek_core::ErrorCode;
use tracing::{info, warn};

use crate::listeners::{Listener, SaslSettings};
use crate::shard::Shard;

/// One connection.
pub struct Session {
    pub peer: String,
    /// The client's address without its port, as ACLs name hosts.
    pub host: String,
    pub listener: Rc<Listener>,
    principal: RefCell<String>,
    auth: RefCell<Auth>,
    /// `connections.max.reauth.ms` (KIP-368): how long a SASL login lasts before the client
    /// must authenticate again on the same connection; `None`: for the connection's life.
    reauth: Option<std::time::Duration>,
    /// The mechanism and user of the last successful SASL exchange, which a re-authentication
    /// must repeat, and when that login expires.
    login: RefCell<Option<Login>>,
    /// Until when a throttled client's requests are left unread (KIP-219).
    pub mute: Mute,
}

/// A connection's muting: once an answer told the client to hold off for a throttle time, the
/// broker reads none of its requests until that time has passed, so a client that ignores
/// `throttle_time_ms` is held to its quota too.
#[derive(Clone, Default)]
pub struct Mute(Rc<std::cell::Cell<Option<std::time::Instant>>>);

impl Mute {
    pub fn throttle(&self, ms: i64) {
        if ms <= 0 {
            return;
        }
        let until = std::time::Instant::now() + std::time::Duration::from_millis(ms as u64);
        self.0.set(Some(self.0.get().map_or(until, |u| u.max(until))));
    }

    /// When reading may go on, if it must wait.
    pub fn until(&self) -> Option<std::time::Instant> {
        self.0.get().filter(|u| *u > std::time::Instant::now())
    }
}

struct Login {
    mechanism: Mechanism,
    user: String,
    expires: Option<std::time::Instant>,
}

enum Auth {
    /// Nothing to prove on this listener, or already proved.
    Done,
    /// A SASL listener before the client's SaslHandshake.
    Handshake,
    /// Between SaslHandshake and the end of the exchange.
    Exchange(SaslServer),
    /// After a SaslHandshake v0: the exchange's tokens come as bare size-prefixed frames, not
    /// in SaslAuthenticate requests (Kafka before 1.0; librdkafka still asks for v0 support).
    RawExchange(SaslServer),
}

/// What the reader does with a SASL request.
pub enum SaslOutcome {
    /// Send this and read on.
    Answer(Bytes),
    /// Send this, then close the connection for the reason given (Kafka closes after a failed
    /// authentication or an unsupported mechanism).
    AnswerAndClose(Bytes, String),
}

impl Session {
    /// `certificate_subject`: the subject of the client's TLS certificate, if it gave one.
    pub fn new(
        peer: String,
        listener: Rc<Listener>,
        certificate_subject: Option<String>,
        reauth: Option<std::time::Duration>,
    ) -> Session {
        let principal = certificate_subject.map_or_else(|| principal::ANONYMOUS.to_owned(), |s| principal::user(&s));
        let auth = if listener.sasl.is_some() { Auth::Handshake } else { Auth::Done };
        let host = peer.parse::<std::net::SocketAddr>().map_or_else(|_| peer.clone(), |a| a.ip().to_canonical().to_string());
        Session {
            peer,
            host,
            listener,
            principal: RefCell::new(principal),
            auth: RefCell::new(auth),
            reauth,
            login: RefCell::new(None),
            mute: Mute::default(),
        }
    }

    /// Runs `decide` with this connection's standing against the node's ACLs; `None` when no
    /// authorizer is configured (everything is allowed). Synchronous: the image stays borrowed
    /// only for the call.
    pub fn with_access<R>(&self, shard: &Shard, decide: impl FnOnce(&Access) -> R) -> Option<R> {
        let config = shard.shared.config.authorizer.as_ref()?;
        let image = shard.image.borrow();
        let principal = self.principal.borrow();
        Some(decide(&Access { acls: image.acls(), config, principal: &principal, host: &self.host }))
    }

    /// The answer refusing a request authorized as a whole (`authz::refuse`), if it is refused.
    pub fn refuse(&self, shard: &Shard, request: &Request) -> Result<Option<Bytes>, RequestError> {
        self.with_access(shard, |access| authz::refuse(request, access)).transpose().map(Option::flatten)
    }

    pub fn principal(&self) -> String {
        self.principal.borrow().clone()
    }

    /// The name a user quota entity names this connection's principal by (`ANONYMOUS` when
    /// it proved nothing), as Kafka's quotas see it.
    pub fn quota_user(&self) -> String {
        let principal = self.principal.borrow();
        principal.strip_prefix("User:").unwrap_or(&principal).to_owned()
    }

    /// Whether `api` may be served now; the reason to close the connection if not. Before a
    /// SASL exchange ends only ApiVersions and the exchange's own requests are served.
    pub fn admits(&self, api: ApiKey) -> Result<(), String> {
        match (&*self.auth.borrow(), api) {
            // A re-authentication (KIP-368) starts with a SaslHandshake on an open connection.
            (Auth::Done, ApiKey::SaslHandshake) if self.reauth.is_some() => Ok(()),
            (Auth::Done, other) => match &*self.login.borrow() {
                Some(Login { expires: Some(at), user, .. }) if *at <= std::time::Instant::now() => Err(format!(
                    "a {other:?} request after {user:?}'s SASL session expired without re-authentication (connections.max.reauth.ms)"
                )),
                _ => Ok(()),
            },
            (Auth::Handshake, ApiKey::ApiVersions | ApiKey::SaslHandshake) => Ok(()),
            (Auth::Exchange(_), ApiKey::SaslAuthenticate) => Ok(()),
            (Auth::Handshake, other) => Err(format!(
                "a {other:?} request before SASL authentication on listener {} (is the client set to security.protocol {}?)",
                self.listener.name,
                self.listener.protocol.name()
            )),
            (Auth::Exchange(_) | Auth::RawExchange(_), other) => Err(format!("a {other:?} request in the middle of a SASL exchange")),
        }
    }

    /// Answers SaslHandshake and SaslAuthenticate; `None` for any other request.
    pub fn sasl(&self, request: &Request, image: &MetadataImage) -> Option<Result<SaslOutcome, RequestError>> {
        match request.api_key {
            ApiKey::SaslHandshake => Some(self.handshake(request)),
            ApiKey::SaslAuthenticate => Some(self.authenticate(request, image)),
            _ => None,
        }
    }

    fn handshake(&self, request: &Request) -> Result<SaslOutcome, RequestError> {
        let (version, correlation_id) = (request.version(), request.correlation_id());
        let handshake: SaslHandshakeRequest = request.decode()?;
        let encode = |r: &SaslHandshakeResponse| wire::encode_response(ApiKey::SaslHandshake, version, correlation_id, r);
        let reauthenticating = self.reauth.is_some() && self.login.borrow().is_some() && matches!(*self.auth.borrow(), Auth::Done);
        let expected = matches!(*self.auth.borrow(), Auth::Handshake) || reauthenticating;
        let Some(sasl) = self.listener.sasl.as_ref().filter(|_| expected) else {
            // Kafka answers a handshake on a listener without SASL, or a second one, so.
            let response = SaslHandshakeResponse::default().with_error_code(ErrorCode::IllegalSaslState.code());
            return Ok(SaslOutcome::AnswerAndClose(encode(&response)?, "a SaslHandshake where none was expected".into()));
        };
        let enabled: Vec<StrBytes> = sasl.mechanisms.iter().map(|m| StrBytes::from_static_str(m.name())).collect();
        let response = SaslHandshakeResponse::default().with_mechanisms(enabled);
        let previous = self.login.borrow().as_ref().map(|l| l.mechanism).filter(|_| reauthenticating);
        match Mechanism::parse(handshake.mechanism.as_str()).filter(|m| sasl.mechanisms.contains(m)) {
            // Kafka requires a re-authentication to use the mechanism of the first login.
            Some(mechanism) if previous.is_some_and(|p| p != mechanism) => {
                let response = response.with_error_code(ErrorCode::IllegalSaslState.code());
                Ok(SaslOutcome::AnswerAndClose(
                    encode(&response)?,
                    format!("re-authentication with {} after a {} login", mechanism.name(), previous.map_or("", Mechanism::name)),
                ))
            }
            Some(mechanism) => {
                // The server nonce: random, printable, no commas (RFC 5802).
                let nonce = format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
                let server = SaslServer::new(mechanism, nonce);
                *self.auth.borrow_mut() = if version == 0 { Auth::RawExchange(server) } else { Auth::Exchange(server) };
                Ok(SaslOutcome::Answer(encode(&response)?))
            }
            None => {
                let response = response.with_error_code(ErrorCode::UnsupportedSaslMechanism.code());
                let names: Vec<&str> = sasl.mechanisms.iter().map(|m| m.name()).collect();
                Ok(SaslOutcome::AnswerAndClose(
                    encode(&response)?,
                    format!("SASL mechanism {:?} is not enabled on listener {} (enabled: {})", handshake.mechanism.as_str(), self.listener.name, names.join(", ")),
                ))
            }
        }
    }

    fn authenticate(&self, request: &Request, image: &MetadataImage) -> Result<SaslOutcome, RequestError> {
        let (version, correlation_id) = (request.version(), request.correlation_id());
        let authenticate: SaslAuthenticateRequest = request.decode()?;
        let encode = |r: &SaslAuthenticateResponse| wire::encode_response(ApiKey::SaslAuthenticate, version, correlation_id, r);
        let mut auth = self.auth.borrow_mut();
        let (Auth::Exchange(server), Some(sasl)) = (&mut *auth, self.listener.sasl.as_ref()) else {
            let response = SaslAuthenticateResponse::default().with_error_code(ErrorCode::IllegalSaslState.code());
            return Ok(SaslOutcome::AnswerAndClose(encode(&response)?, "a SaslAuthenticate without a SaslHandshake before it".into()));
        };
        match self.step(server, sasl, &authenticate.auth_bytes, image) {
            Ok((bytes, done)) => {
                if done {
                    *auth = Auth::Done;
                }
                // v1+ tells the client when to authenticate again (0: never).
                let lifetime = if done { self.reauth.map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)) } else { 0 };
                let response = SaslAuthenticateResponse::default().with_auth_bytes(bytes.into()).with_session_lifetime_ms(lifetime);
                Ok(SaslOutcome::Answer(encode(&response)?))
            }
            Err((message, reason)) => {
                let response = SaslAuthenticateResponse::default()
                    .with_error_code(ErrorCode::SaslAuthenticationFailed.code())
                    .with_error_message(Some(StrBytes::from_string(message)));
                Ok(SaslOutcome::AnswerAndClose(encode(&response)?, reason))
            }
        }
    }

    /// Whether the next frame is a bare SASL token (after a SaslHandshake v0).
    pub fn expects_raw_token(&self) -> bool {
        matches!(*self.auth.borrow(), Auth::RawExchange(_))
    }

    /// Answers a bare token with a bare, size-prefixed one. A failure has no way to be told
    /// in this framing: Kafka closes the connection, and so does this.
    pub fn raw_token(&self, token: &[u8], image: &MetadataImage) -> Result<Bytes, String> {
        let mut auth = self.auth.borrow_mut();
        let (Auth::RawExchange(server), Some(sasl)) = (&mut *auth, self.listener.sasl.as_ref()) else {
            return Err("a bare SASL token outside an exchange".into());
        };
        let (bytes, done) = self.step(server, sasl, token, image).map_err(|(_, reason)| reason)?;
        if done {
            *auth = Auth::Done;
        }
        let size = i32::try_from(bytes.len()).map_err(|_| "an oversize SASL token".to_owned())?;
        Ok([&size.to_be_bytes()[..], &bytes].concat().into())
    }

    /// One step of the exchange: the bytes to send and whether it is over, or the message for
    /// the client and the reason to close.
    fn step(&self, server: &mut SaslServer, sasl: &SaslSettings, token: &[u8], image: &MetadataImage) -> Result<(Vec<u8>, bool), (String, String)> {
        match server.step(token, &Lookup { sasl, image }) {
            Ok(Step::Continue(challenge)) => Ok((challenge, false)),
            Ok(Step::Done { user, response }) => {
                let mechanism = server.mechanism();
                let mut login = self.login.borrow_mut();
                if let Some(first) = login.as_ref().filter(|l| l.user != user) {
                    // KIP-368: a connection keeps its principal.
                    let message = format!("Cannot change principals during re-authentication from User:{} to User:{user}", first.user);
                    warn!(peer = %self.peer, listener = %self.listener.name, "re-authentication refused: {message}");
                    return Err((message.clone(), message));
                }
                let again = login.is_some();
                info!(peer = %self.peer, listener = %self.listener.name, mechanism = mechanism.name(), %user, "{}", if again { "re-authenticated" } else { "authenticated" });
                *self.principal.borrow_mut() = principal::user(&user);
                let expires = self.reauth.map(|d| std::time::Instant::now() + d);
                *login = Some(Login { mechanism, user, expires });
                Ok((response, true))
            }
            Err(e) => {
                let user = server.user().unwrap_or("(none given)").to_owned();
                let mechanism = server.mechanism().name();
                warn!(peer = %self.peer, listener = %self.listener.name, mechanism, %user, "authentication failed: {e}");
                Err((e.0, format!("SASL {mechanism} authentication of {user:?} failed")))
            }
        }
    }
}

/// PLAIN's users from the listener's settings, SCRAM's from the metadata log.
struct Lookup<'a> {
    sasl: &'a SaslSettings,
    image: &'a MetadataImage,
}

impl Credentials for Lookup<'_> {
    fn plain_matches(&self, user: &str, password: &str) -> bool {
        let configured: &BTreeMap<String, String> = &self.sasl.plain_users;
        configured
            .get(user)
            .is_some_and(|expected| odradek_core::sasl::plain_password_matches(expected, password))
    }

    fn scram(&self, mechanism: Mechanism, user: &str) -> Option<ScramCredential> {
        self.image.scram_credential(mechanism, user).cloned()
    }
}
