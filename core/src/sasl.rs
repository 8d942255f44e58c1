//! SASL authentication on the server side, as a Kafka broker does it (KIP-43, KIP-84, KIP-152):
//! PLAIN (RFC 4616) and SCRAM-SHA-256 / SCRAM-SHA-512 (RFC 5802, RFC 7677).
//!
//! Pure logic, like the rest of core: the driver draws the server nonce (the only randomness a
//! SCRAM exchange needs) and hands it to [`SaslServer::new`], and user lookups go through the
//! [`Credentials`] trait, so an exchange is a deterministic function of its inputs and the RFC
//! test vectors can be replayed exactly.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use ring::{digest, hmac, pbkdf2};
use std::fmt;
use std::num::NonZeroU32;

/// A SASL mechanism the broker offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Mechanism {
    Plain,
    ScramSha256,
    ScramSha512,
}

impl Mechanism {
    pub const ALL: [Mechanism; 3] = [
        Mechanism::Plain,
        Mechanism::ScramSha256,
        Mechanism::ScramSha512,
    ];

    /// The name clients send in SaslHandshake.
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::ScramSha256 => "SCRAM-SHA-256",
            Mechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }

    /// Exact and case-sensitive, as Kafka matches `sasl.enabled.mechanisms`.
    pub fn parse(name: &str) -> Option<Mechanism> {
        Mechanism::ALL.into_iter().find(|m| m.name() == name)
    }

    /// Kafka's ScramMechanism byte in Alter/DescribeUserScramCredentials: 1 = SHA-256, 2 = SHA-512.
    pub fn scram_type(self) -> Option<i8> {
        match self {
            Mechanism::Plain => None,
            Mechanism::ScramSha256 => Some(1),
            Mechanism::ScramSha512 => Some(2),
        }
    }

    pub fn from_scram_type(t: i8) -> Option<Mechanism> {
        match t {
            1 => Some(Mechanism::ScramSha256),
            2 => Some(Mechanism::ScramSha512),
            _ => None,
        }
    }

    pub fn is_scram(self) -> bool {
        self.scram_type().is_some()
    }

    fn hmac_algorithm(self) -> hmac::Algorithm {
        match self {
            Mechanism::ScramSha256 => hmac::HMAC_SHA256,
            Mechanism::ScramSha512 => hmac::HMAC_SHA512,
            Mechanism::Plain => panic!("PLAIN has no SCRAM hash"),
        }
    }

    fn digest_algorithm(self) -> &'static digest::Algorithm {
        match self {
            Mechanism::ScramSha256 => &digest::SHA256,
            Mechanism::ScramSha512 => &digest::SHA512,
            Mechanism::Plain => panic!("PLAIN has no SCRAM hash"),
        }
    }

    fn pbkdf2_algorithm(self) -> pbkdf2::Algorithm {
        match self {
            Mechanism::ScramSha256 => pbkdf2::PBKDF2_HMAC_SHA256,
            Mechanism::ScramSha512 => pbkdf2::PBKDF2_HMAC_SHA512,
            Mechanism::Plain => panic!("PLAIN has no SCRAM hash"),
        }
    }
}

/// Kafka's bounds on SCRAM iterations (ScramMechanism.minIterations / maxIterations).
pub const MIN_SCRAM_ITERATIONS: i32 = 4096;
pub const MAX_SCRAM_ITERATIONS: i32 = 16384;

/// What the broker stores for a SCRAM user (Kafka's ScramCredential), never the password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScramCredential {
    pub salt: Vec<u8>,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
    pub iterations: i32,
}

impl ScramCredential {
    /// From the salted password a client sends in AlterUserScramCredentials (Kafka derives the
    /// keys on the broker). Panics for PLAIN.
    pub fn from_salted_password(
        mechanism: Mechanism,
        salt: &[u8],
        salted_password: &[u8],
        iterations: i32,
    ) -> ScramCredential {
        let client_key = hmac_bytes(mechanism, salted_password, b"Client Key");
        ScramCredential {
            salt: salt.to_vec(),
            stored_key: hash(mechanism, &client_key),
            server_key: hmac_bytes(mechanism, salted_password, b"Server Key"),
            iterations,
        }
    }

    /// Panics for PLAIN and for `iterations < 1`.
    pub fn from_password(
        mechanism: Mechanism,
        password: &str,
        salt: &[u8],
        iterations: i32,
    ) -> ScramCredential {
        let rounds = u32::try_from(iterations).expect("SCRAM iterations must be positive");
        let salted = salted_password(mechanism, password, salt, rounds);
        ScramCredential::from_salted_password(mechanism, salt, &salted, iterations)
    }
}

/// Hi(password, salt, i) of RFC 5802 (PBKDF2 with HMAC-SHA-256/512). Panics for PLAIN and for
/// zero iterations.
pub fn salted_password(
    mechanism: Mechanism,
    password: &str,
    salt: &[u8],
    iterations: u32,
) -> Vec<u8> {
    let rounds = NonZeroU32::new(iterations).expect("SCRAM iterations must be positive");
    let mut out = vec![0u8; mechanism.digest_algorithm().output_len()];
    pbkdf2::derive(
        mechanism.pbkdf2_algorithm(),
        rounds,
        salt,
        password.as_bytes(),
        &mut out,
    );
    out
}

/// Where a server exchange looks users up.
pub trait Credentials {
    /// PLAIN: whether `password` is `user`'s configured password (compare in constant time, e.g.
    /// with [`plain_password_matches`]).
    fn plain_matches(&self, user: &str, password: &str) -> bool;
    fn scram(&self, mechanism: Mechanism, user: &str) -> Option<ScramCredential>;
}

/// Compares a configured PLAIN password with an offered one without letting timing reveal
/// either: both are hashed first, so even their lengths stay hidden from the comparison.
pub fn plain_password_matches(configured: &str, offered: &str) -> bool {
    let configured = digest::digest(&digest::SHA256, configured.as_bytes());
    let offered = digest::digest(&digest::SHA256, offered.as_bytes());
    equal_in_constant_time(configured.as_ref(), offered.as_ref())
}

/// One connection's authentication exchange on the server side.
///
/// The driver creates one after SaslHandshake picked `mechanism`, feeds every SaslAuthenticate
/// `auth_bytes` to [`SaslServer::step`], and answers with what it returns: `Continue` bytes as
/// the next challenge, `Done` as success (principal `User:<user>`), an error as
/// SASL_AUTHENTICATION_FAILED with the error's message and then closes the connection. Once an
/// exchange has finished, either way, every further step fails.
pub struct SaslServer {
    mechanism: Mechanism,
    server_nonce: String,
    user: Option<String>,
    phase: Phase,
}

/// What a step produced when it did not fail.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Send these bytes as SaslAuthenticate's auth_bytes and expect another token.
    Continue(Vec<u8>),
    /// Authenticated as `user` (the principal is "User:" + user); send `response` (may be empty).
    Done { user: String, response: Vec<u8> },
}

/// Why an exchange failed: Kafka answers SASL_AUTHENTICATION_FAILED with this message. Never
/// contains a password or a proof.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SaslError(pub String);

impl SaslError {
    fn new(message: impl Into<String>) -> SaslError {
        SaslError(message.into())
    }
}

enum Phase {
    /// Waiting for PLAIN's only message or SCRAM's client-first.
    Start,
    /// SCRAM: server-first sent, waiting for client-final. Everything the proof is checked against.
    ScramFinal {
        gs2_header: String,
        client_first_bare: String,
        server_first: String,
        nonce: String,
        credential: ScramCredential,
    },
    /// Succeeded or failed; nothing more is accepted.
    Finished,
}

impl SaslServer {
    /// `server_nonce`: printable ASCII without ',' drawn by the driver (random), appended to the
    /// client's nonce. Panics if it is not, since the server-first message would be malformed.
    pub fn new(mechanism: Mechanism, server_nonce: String) -> SaslServer {
        assert!(
            !mechanism.is_scram() || (!server_nonce.is_empty() && is_printable(&server_nonce)),
            "SCRAM server nonce must be non-empty printable ASCII without ','"
        );
        SaslServer {
            mechanism,
            server_nonce,
            user: None,
            phase: Phase::Start,
        }
    }

    pub fn mechanism(&self) -> Mechanism {
        self.mechanism
    }

    /// The user named so far (from SCRAM's client-first or PLAIN's message), for log lines about a
    /// failure. Not authenticated unless a step returned `Done`.
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    pub fn step(&mut self, token: &[u8], credentials: &dyn Credentials) -> Result<Step, SaslError> {
        // Whatever happens below, a failed step ends the exchange, as Kafka's FAILED state does.
        let phase = std::mem::replace(&mut self.phase, Phase::Finished);
        match phase {
            Phase::Start if self.mechanism == Mechanism::Plain => self.on_plain(token, credentials),
            Phase::Start => self.on_client_first(token, credentials),
            Phase::ScramFinal {
                gs2_header,
                client_first_bare,
                server_first,
                nonce,
                credential,
            } => {
                let user = self.user.clone().expect("client-first named the user");
                let response = self.on_client_final(
                    token,
                    &gs2_header,
                    &client_first_bare,
                    &server_first,
                    &nonce,
                    &credential,
                )?;
                Ok(Step::Done { user, response })
            }
            Phase::Finished => Err(SaslError::new("Authentication exchange already finished")),
        }
    }

    /// RFC 4616: `authzid NUL authcid NUL passwd`, checked in Kafka's order.
    fn on_plain(&mut self, token: &[u8], credentials: &dyn Credentials) -> Result<Step, SaslError> {
        let parts: Vec<&[u8]> = token.split(|&b| b == 0).collect();
        if parts.len() != 3 {
            return Err(SaslError(format!(
                "Invalid SASL/PLAIN response: expected 3 tokens, got {}",
                parts.len()
            )));
        }
        let text = |bytes| {
            std::str::from_utf8(bytes)
                .map_err(|_| SaslError::new("Invalid SASL/PLAIN response: not UTF-8"))
        };
        let (authzid, user, password) = (text(parts[0])?, text(parts[1])?, text(parts[2])?);
        if user.is_empty() {
            return Err(SaslError::new(
                "Authentication failed: username not specified",
            ));
        }
        self.user = Some(user.to_owned());
        if password.is_empty() {
            return Err(SaslError::new(
                "Authentication failed: password not specified",
            ));
        }
        if !credentials.plain_matches(user, password) {
            return Err(SaslError::new(
                "Authentication failed: Invalid username or password",
            ));
        }
        if !authzid.is_empty() && authzid != user {
            return Err(authzid_mismatch());
        }
        Ok(Step::Done {
            user: user.to_owned(),
            response: Vec::new(),
        })
    }

    /// RFC 5802 client-first: `gs2-header client-first-bare`; answers with server-first.
    fn on_client_first(
        &mut self,
        token: &[u8],
        credentials: &dyn Credentials,
    ) -> Result<Step, SaslError> {
        let message = std::str::from_utf8(token)
            .map_err(|_| SaslError::new("Invalid SCRAM client first message: not UTF-8"))?;
        let first = ClientFirst::parse(message)?;
        self.user = Some(first.user.clone());
        if first.token_auth {
            return Err(SaslError::new(
                "Authentication failed: delegation token authentication (tokenauth) is not supported",
            ));
        }
        let credential = credentials
            .scram(self.mechanism, &first.user)
            .ok_or_else(|| SaslError::new("Authentication failed: Invalid user credentials"))?;
        if first
            .authzid
            .as_ref()
            .is_some_and(|authzid| *authzid != first.user)
        {
            return Err(authzid_mismatch());
        }
        if credential.iterations < MIN_SCRAM_ITERATIONS {
            return Err(SaslError(format!(
                "Iterations {} is less than the minimum {} for {}",
                credential.iterations,
                MIN_SCRAM_ITERATIONS,
                self.mechanism.name()
            )));
        }
        let nonce = format!("{}{}", first.nonce, self.server_nonce);
        let server_first = format!(
            "r={},s={},i={}",
            nonce,
            BASE64.encode(&credential.salt),
            credential.iterations
        );
        let response = server_first.clone().into_bytes();
        self.phase = Phase::ScramFinal {
            gs2_header: first.gs2_header.to_owned(),
            client_first_bare: first.bare.to_owned(),
            server_first,
            nonce,
            credential,
        };
        Ok(Step::Continue(response))
    }

    /// RFC 5802 client-final: `c=<gs2 header>,r=<nonce>[,extensions],p=<proof>`; answers with
    /// `v=<server signature>` once the proof shows the client knows the password.
    fn on_client_final(
        &self,
        token: &[u8],
        gs2_header: &str,
        client_first_bare: &str,
        server_first: &str,
        nonce: &str,
        credential: &ScramCredential,
    ) -> Result<Vec<u8>, SaslError> {
        let malformed =
            |what: &str| SaslError(format!("Invalid SCRAM client final message: {what}"));
        let message = std::str::from_utf8(token).map_err(|_| malformed("not UTF-8"))?;
        // The proof is the last attribute and base64 has no ',', so the last ",p=" starts it.
        let proof_at = message.rfind(",p=").ok_or_else(|| malformed("no proof"))?;
        let (without_proof, proof) = (&message[..proof_at], &message[proof_at + 3..]);
        let mut attributes = without_proof.split(',');
        let channel_binding = attributes
            .next()
            .and_then(|a| a.strip_prefix("c="))
            .ok_or_else(|| malformed("no channel binding"))?;
        let client_nonce = attributes
            .next()
            .and_then(|a| a.strip_prefix("r="))
            .ok_or_else(|| malformed("no nonce"))?;
        for extension in attributes {
            parse_extension(extension).ok_or_else(|| malformed("invalid extension"))?;
        }
        let channel_binding = BASE64
            .decode(channel_binding)
            .map_err(|_| malformed("channel binding is not base64"))?;
        if channel_binding != gs2_header.as_bytes() {
            return Err(SaslError::new(
                "Authentication failed: Invalid channel binding in the final client message",
            ));
        }
        if client_nonce != nonce {
            return Err(SaslError::new(
                "Invalid client nonce in the final client message.",
            ));
        }
        let proof = BASE64
            .decode(proof)
            .map_err(|_| malformed("proof is not base64"))?;
        let key_len = self.mechanism.digest_algorithm().output_len();
        if proof.len() != key_len {
            return Err(malformed(&format!(
                "proof has {} bytes, expected {key_len}",
                proof.len()
            )));
        }

        let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
        let client_signature = hmac_bytes(
            self.mechanism,
            &credential.stored_key,
            auth_message.as_bytes(),
        );
        let client_key: Vec<u8> = proof
            .iter()
            .zip(&client_signature)
            .map(|(p, s)| p ^ s)
            .collect();
        let stored_key = hash(self.mechanism, &client_key);
        if !equal_in_constant_time(&stored_key, &credential.stored_key) {
            return Err(SaslError(format!(
                "Authentication failed during authentication due to invalid credentials with SASL mechanism {}",
                self.mechanism.name()
            )));
        }
        let server_signature = hmac_bytes(
            self.mechanism,
            &credential.server_key,
            auth_message.as_bytes(),
        );
        Ok(format!("v={}", BASE64.encode(server_signature)).into_bytes())
    }
}

impl fmt::Debug for SaslServer {
    // By hand: the exchange holds the user's stored and server keys, which logs have no use for.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let phase = match self.phase {
            Phase::Start => "start",
            Phase::ScramFinal { .. } => "scram-final",
            Phase::Finished => "finished",
        };
        f.debug_struct("SaslServer")
            .field("mechanism", &self.mechanism)
            .field("user", &self.user)
            .field("phase", &phase)
            .finish()
    }
}

/// A parsed SCRAM client-first message; the slices are kept verbatim for the AuthMessage.
struct ClientFirst<'a> {
    gs2_header: &'a str,
    bare: &'a str,
    /// The decoded `a=` of the gs2 header, if present.
    authzid: Option<String>,
    user: String,
    nonce: &'a str,
    token_auth: bool,
}

impl<'a> ClientFirst<'a> {
    /// `n,[a=authzid],[m=...,]n=saslname,r=nonce[,ext=value]*`, as Kafka's ClientFirstMessage.
    fn parse(message: &'a str) -> Result<ClientFirst<'a>, SaslError> {
        let malformed =
            |what: &str| SaslError(format!("Invalid SCRAM client first message: {what}"));
        let after_flag = match message.as_bytes().first() {
            Some(b'n') => message[1..]
                .strip_prefix(',')
                .ok_or_else(|| malformed("bad gs2 header"))?,
            Some(b'p' | b'y') => return Err(malformed("channel binding is not supported")),
            _ => return Err(malformed("bad gs2 header")),
        };
        let authzid_end = after_flag
            .find(',')
            .ok_or_else(|| malformed("bad gs2 header"))?;
        let authzid = match &after_flag[..authzid_end] {
            "" => None,
            a => {
                let a = a
                    .strip_prefix("a=")
                    .ok_or_else(|| malformed("bad gs2 header"))?;
                Some(decode_saslname(a).ok_or_else(|| malformed("invalid authorization id"))?)
            }
        };
        let gs2_len = message.len() - after_flag.len() + authzid_end + 1;
        let (gs2_header, bare) = message.split_at(gs2_len);

        let mut attributes = bare.split(',');
        let user = attributes.next().unwrap_or_default();
        if user.starts_with("m=") {
            // RFC 5802 5.1: a mandatory extension the server does not know must fail the exchange.
            return Err(malformed("mandatory extension (m=) is not supported"));
        }
        let user = user
            .strip_prefix("n=")
            .ok_or_else(|| malformed("no username"))?;
        let user = decode_saslname(user).ok_or_else(|| malformed("invalid username encoding"))?;
        let nonce = attributes
            .next()
            .and_then(|a| a.strip_prefix("r="))
            .filter(|n| !n.is_empty() && is_printable(n))
            .ok_or_else(|| malformed("no valid nonce"))?;
        let mut token_auth = false;
        for extension in attributes {
            let (key, value) =
                parse_extension(extension).ok_or_else(|| malformed("invalid extension"))?;
            // Kafka's ScramExtensions reads it with Boolean.parseBoolean; other keys are ignored.
            if key == "tokenauth" && value.eq_ignore_ascii_case("true") {
                token_auth = true;
            }
        }
        Ok(ClientFirst {
            gs2_header,
            bare,
            authzid,
            user,
            nonce,
            token_auth,
        })
    }
}

/// RFC 5802 saslname: '=2C' stands for ',' and '=3D' for '='; any other '=' is invalid, and so is
/// an empty name or a NUL.
fn decode_saslname(name: &str) -> Option<String> {
    if name.is_empty() {
        return None;
    }
    let mut decoded = String::with_capacity(name.len());
    let mut rest = name;
    while let Some(c) = rest.chars().next() {
        match c {
            '=' if rest.starts_with("=2C") => decoded.push(','),
            '=' if rest.starts_with("=3D") => decoded.push('='),
            '=' | '\0' => return None,
            c => decoded.push(c),
        }
        rest = &rest[if c == '=' { 3 } else { c.len_utf8() }..];
    }
    Some(decoded)
}

/// `key=value` of a SCRAM extension: key alphabetic, value non-empty ASCII without NUL (the
/// caller has split on ',').
fn parse_extension(extension: &str) -> Option<(&str, &str)> {
    let (key, value) = extension.split_once('=')?;
    let key_ok = !key.is_empty() && key.bytes().all(|b| b.is_ascii_alphabetic());
    let value_ok = !value.is_empty() && value.bytes().all(|b| (0x01..=0x7f).contains(&b));
    (key_ok && value_ok).then_some((key, value))
}

/// RFC 5802's `printable`: %x21-2B / %x2D-7E, what a nonce is made of.
fn is_printable(s: &str) -> bool {
    s.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b',')
}

fn authzid_mismatch() -> SaslError {
    SaslError::new(
        "Authentication failed: Client requested an authorization id that is different from username",
    )
}

/// Lengths are public (both sides are digests of a known size); contents are compared in
/// constant time.
fn equal_in_constant_time(a: &[u8], b: &[u8]) -> bool {
    // ring 0.17.14 marks this wrapper deprecated (internal, to be removed), but it calls the same
    // comparison ring's own hmac::verify uses, and ring offers no public replacement yet.
    #[allow(deprecated)]
    let equal = ring::constant_time::verify_slices_are_equal(a, b).is_ok();
    equal
}

fn hmac_bytes(mechanism: Mechanism, key: &[u8], data: &[u8]) -> Vec<u8> {
    let key = hmac::Key::new(mechanism.hmac_algorithm(), key);
    hmac::sign(&key, data).as_ref().to_vec()
}

fn hash(mechanism: Mechanism, data: &[u8]) -> Vec<u8> {
    digest::digest(mechanism.digest_algorithm(), data)
        .as_ref()
        .to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Users kept in vectors: lookups are linear, and nothing iterates a hash map.
    #[derive(Default)]
    struct Users {
        plain: Vec<(&'static str, &'static str)>,
        scram: Vec<(Mechanism, String, ScramCredential)>,
    }

    impl Users {
        fn with_scram(
            mut self,
            mechanism: Mechanism,
            user: &str,
            password: &str,
            salt: &[u8],
        ) -> Users {
            let credential = ScramCredential::from_password(mechanism, password, salt, 4096);
            self.scram.push((mechanism, user.to_owned(), credential));
            self
        }
    }

    impl Credentials for Users {
        fn plain_matches(&self, user: &str, password: &str) -> bool {
            self.plain
                .iter()
                .any(|&(u, p)| u == user && plain_password_matches(p, password))
        }
        fn scram(&self, mechanism: Mechanism, user: &str) -> Option<ScramCredential> {
            self.scram
                .iter()
                .find(|(m, u, _)| *m == mechanism && u == user)
                .map(|(_, _, c)| c.clone())
        }
    }

    fn plain_users() -> Users {
        Users {
            plain: vec![("alice", "alice-secret"), ("bob", "bob-secret")],
            ..Users::default()
        }
    }

    fn err(message: &str) -> Result<Step, SaslError> {
        Err(SaslError(message.to_owned()))
    }

    /// The client side of RFC 5802, written independently of the server: returns client-final
    /// and the server-final the client expects.
    fn client_final(
        mechanism: Mechanism,
        password: &str,
        client_first_bare: &str,
        server_first: &str,
        gs2_header: &str,
    ) -> (String, String) {
        let mut nonce = None;
        let mut salt = None;
        let mut iterations = None;
        for attribute in server_first.split(',') {
            match attribute.split_at(2) {
                ("r=", v) => nonce = Some(v.to_owned()),
                ("s=", v) => salt = Some(BASE64.decode(v).unwrap()),
                ("i=", v) => iterations = Some(v.parse::<u32>().unwrap()),
                _ => panic!("unexpected attribute in server-first {attribute}"),
            }
        }
        let salted = salted_password(mechanism, password, &salt.unwrap(), iterations.unwrap());
        let client_key = hmac_bytes(mechanism, &salted, b"Client Key");
        let stored_key = hash(mechanism, &client_key);
        let without_proof = format!("c={},r={}", BASE64.encode(gs2_header), nonce.unwrap());
        let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
        let signature = hmac_bytes(mechanism, &stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&signature)
            .map(|(k, s)| k ^ s)
            .collect();
        let server_key = hmac_bytes(mechanism, &salted, b"Server Key");
        let server_signature = hmac_bytes(mechanism, &server_key, auth_message.as_bytes());
        (
            format!("{without_proof},p={}", BASE64.encode(proof)),
            format!("v={}", BASE64.encode(server_signature)),
        )
    }

    fn continued(step: Result<Step, SaslError>) -> String {
        match step {
            Ok(Step::Continue(bytes)) => String::from_utf8(bytes).unwrap(),
            other => panic!("expected Continue, got {other:?}"),
        }
    }

    #[test]
    fn mechanism_names_and_scram_types_round_trip() {
        for mechanism in Mechanism::ALL {
            assert_eq!(Mechanism::parse(mechanism.name()), Some(mechanism));
            if let Some(t) = mechanism.scram_type() {
                assert_eq!(Mechanism::from_scram_type(t), Some(mechanism));
            }
            assert_eq!(mechanism.is_scram(), mechanism != Mechanism::Plain);
        }
        assert_eq!(Mechanism::ScramSha256.scram_type(), Some(1));
        assert_eq!(Mechanism::ScramSha512.scram_type(), Some(2));
        assert_eq!(Mechanism::parse("plain"), None);
        assert_eq!(Mechanism::parse("SCRAM-SHA-1"), None);
        assert_eq!(Mechanism::from_scram_type(0), None);
    }

    #[test]
    fn rfc7677_scram_sha256_example() {
        let salt = BASE64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let users = Users::default().with_scram(Mechanism::ScramSha256, "user", "pencil", &salt);
        let mut server = SaslServer::new(
            Mechanism::ScramSha256,
            "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0".to_owned(),
        );

        let server_first = continued(server.step(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO", &users));
        assert_eq!(
            server_first,
            "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
        );
        assert_eq!(server.user(), Some("user"));

        let client_final = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
                            p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
        assert_eq!(
            server.step(client_final.as_bytes(), &users),
            Ok(Step::Done {
                user: "user".to_owned(),
                response: b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=".to_vec(),
            })
        );
    }

    #[test]
    fn scram_sha512_round_trip_and_wrong_password() {
        let users =
            Users::default().with_scram(Mechanism::ScramSha512, "alice", "wonderland", b"salt-512");
        for (password, ok) in [("wonderland", true), ("wonderlan", false)] {
            let mut server = SaslServer::new(Mechanism::ScramSha512, "srv-nonce".to_owned());
            let bare = "n=alice,r=cli-nonce";
            let server_first = continued(server.step(format!("n,,{bare}").as_bytes(), &users));
            assert!(server_first.starts_with("r=cli-noncesrv-nonce,s="));
            let (final_message, expected) =
                client_final(Mechanism::ScramSha512, password, bare, &server_first, "n,,");
            let step = server.step(final_message.as_bytes(), &users);
            if ok {
                let response = expected.into_bytes();
                assert_eq!(
                    step,
                    Ok(Step::Done {
                        user: "alice".to_owned(),
                        response
                    })
                );
            } else {
                assert_eq!(
                    step,
                    err(
                        "Authentication failed during authentication due to invalid credentials \
                         with SASL mechanism SCRAM-SHA-512"
                    )
                );
            }
        }
    }

    #[test]
    fn scram_accepts_matching_authzid_and_unknown_extensions() {
        let users = Users::default().with_scram(Mechanism::ScramSha256, "a,b=c", "pw", b"salt");
        let mut server = SaslServer::new(Mechanism::ScramSha256, "S".to_owned());
        let gs2 = "n,a=a=2Cb=3Dc,";
        let bare = "n=a=2Cb=3Dc,r=C,foo=bar,tokenauth=false";
        let server_first = continued(server.step(format!("{gs2}{bare}").as_bytes(), &users));
        assert_eq!(server.user(), Some("a,b=c"));
        let (final_message, expected) =
            client_final(Mechanism::ScramSha256, "pw", bare, &server_first, gs2);
        assert_eq!(
            server.step(final_message.as_bytes(), &users),
            Ok(Step::Done {
                user: "a,b=c".to_owned(),
                response: expected.into_bytes()
            })
        );
    }

    #[test]
    fn scram_refusals() {
        let users = Users::default().with_scram(Mechanism::ScramSha256, "user", "pencil", b"salt");
        let first = |token: &str| {
            SaslServer::new(Mechanism::ScramSha256, "S".to_owned()).step(token.as_bytes(), &users)
        };
        assert_eq!(
            first("n,,n=nobody,r=C"),
            err("Authentication failed: Invalid user credentials")
        );
        assert_eq!(
            first("n,a=admin,n=user,r=C"),
            err("Authentication failed: Client requested an authorization id that is different from username")
        );
        assert_eq!(
            first("n,,n=user,r=C,tokenauth=true"),
            err("Authentication failed: delegation token authentication (tokenauth) is not supported")
        );
        assert_eq!(
            first("p=tls-unique,,n=user,r=C"),
            err("Invalid SCRAM client first message: channel binding is not supported")
        );
        assert_eq!(
            first("y,,n=user,r=C"),
            err("Invalid SCRAM client first message: channel binding is not supported")
        );
        assert_eq!(
            first("n,,m=x,n=user,r=C"),
            err("Invalid SCRAM client first message: mandatory extension (m=) is not supported")
        );
        assert_eq!(
            first("n,,n=user"),
            err("Invalid SCRAM client first message: no valid nonce")
        );
        assert_eq!(
            first("n,,n=user,r=a b"),
            err("Invalid SCRAM client first message: no valid nonce")
        );
        assert_eq!(
            first("n,,r=C"),
            err("Invalid SCRAM client first message: no username")
        );
        assert_eq!(
            first(""),
            err("Invalid SCRAM client first message: bad gs2 header")
        );

        let weak = Users {
            scram: vec![(
                Mechanism::ScramSha256,
                "user".to_owned(),
                ScramCredential::from_password(Mechanism::ScramSha256, "pencil", b"salt", 1024),
            )],
            ..Users::default()
        };
        let mut server = SaslServer::new(Mechanism::ScramSha256, "S".to_owned());
        assert_eq!(
            server.step(b"n,,n=user,r=C", &weak),
            err("Iterations 1024 is less than the minimum 4096 for SCRAM-SHA-256")
        );
    }

    #[test]
    fn saslname_decoding() {
        assert_eq!(decode_saslname("user").as_deref(), Some("user"));
        assert_eq!(decode_saslname("a=2Cb").as_deref(), Some("a,b"));
        assert_eq!(decode_saslname("a=3Db=3D").as_deref(), Some("a=b="));
        assert_eq!(decode_saslname("=3D=2C").as_deref(), Some("=,"));
        assert_eq!(decode_saslname("ünï").as_deref(), Some("ünï"));
        assert_eq!(decode_saslname("a=2cb"), None);
        assert_eq!(decode_saslname("a=41"), None);
        assert_eq!(decode_saslname("a="), None);
        assert_eq!(decode_saslname("a=2"), None);
        assert_eq!(decode_saslname(""), None);
        assert_eq!(decode_saslname("a\0b"), None);

        let users = Users::default();
        let mut server = SaslServer::new(Mechanism::ScramSha512, "S".to_owned());
        assert_eq!(
            server.step(b"n,,n=bad=20name,r=C", &users),
            err("Invalid SCRAM client first message: invalid username encoding")
        );
    }

    #[test]
    fn scram_client_final_mismatches() {
        let users = Users::default().with_scram(Mechanism::ScramSha256, "user", "pencil", b"salt");
        let start = || {
            let mut server = SaslServer::new(Mechanism::ScramSha256, "S".to_owned());
            let server_first = continued(server.step(b"n,,n=user,r=C", &users));
            (server, server_first)
        };

        let (mut server, server_first) = start();
        let (good, _) = client_final(
            Mechanism::ScramSha256,
            "pencil",
            "n=user,r=C",
            &server_first,
            "n,,",
        );
        let wrong_nonce = good.replacen("r=CS", "r=CX", 1);
        assert_eq!(
            server.step(wrong_nonce.as_bytes(), &users),
            err("Invalid client nonce in the final client message.")
        );
        // The failure ended the exchange: even the right proof is now refused.
        assert_eq!(
            server.step(good.as_bytes(), &users),
            err("Authentication exchange already finished")
        );

        let (mut server, _) = start();
        let wrong_binding =
            good.replacen("c=biws", &format!("c={}", BASE64.encode("n,a=user,")), 1);
        assert_eq!(
            server.step(wrong_binding.as_bytes(), &users),
            err("Authentication failed: Invalid channel binding in the final client message")
        );

        let (mut server, _) = start();
        assert_eq!(
            server.step(b"c=biws,r=CS", &users),
            err("Invalid SCRAM client final message: no proof")
        );

        let (mut server, _) = start();
        assert_eq!(
            server.step(b"c=biws,r=CS,p=AAAA", &users),
            err("Invalid SCRAM client final message: proof has 3 bytes, expected 32")
        );

        let (mut server, _) = start();
        assert_eq!(
            server.step(b"c=biws,r=CS,p=not base64!", &users),
            err("Invalid SCRAM client final message: proof is not base64")
        );
    }

    #[test]
    fn step_after_done_fails() {
        let users = plain_users();
        let mut server = SaslServer::new(Mechanism::Plain, String::new());
        assert_eq!(
            server.step(b"\0alice\0alice-secret", &users),
            Ok(Step::Done {
                user: "alice".to_owned(),
                response: Vec::new()
            })
        );
        assert_eq!(
            server.step(b"\0alice\0alice-secret", &users),
            err("Authentication exchange already finished")
        );
    }

    #[test]
    fn plain() {
        let users = plain_users();
        let step =
            |token: &[u8]| SaslServer::new(Mechanism::Plain, String::new()).step(token, &users);
        assert_eq!(
            step(b"bob\0bob\0bob-secret"),
            Ok(Step::Done {
                user: "bob".to_owned(),
                response: Vec::new()
            })
        );
        assert_eq!(
            step(b"\0bob\0alice-secret"),
            err("Authentication failed: Invalid username or password")
        );
        assert_eq!(
            step(b"\0carol\0bob-secret"),
            err("Authentication failed: Invalid username or password")
        );
        assert_eq!(
            step(b"alice\0bob\0bob-secret"),
            err("Authentication failed: Client requested an authorization id that is different from username")
        );
        assert_eq!(
            step(b"\0\0bob-secret"),
            err("Authentication failed: username not specified")
        );
        assert_eq!(
            step(b"\0bob\0"),
            err("Authentication failed: password not specified")
        );
        assert_eq!(
            step(b"bob bob-secret"),
            err("Invalid SASL/PLAIN response: expected 3 tokens, got 1")
        );
        assert_eq!(
            step(b"\0bob\0bob-secret\0"),
            err("Invalid SASL/PLAIN response: expected 3 tokens, got 4")
        );

        let mut server = SaslServer::new(Mechanism::Plain, String::new());
        let failed = server.step(b"\0bob\0wrong", &users).unwrap_err();
        assert!(!failed.0.contains("wrong"));
        assert_eq!(server.user(), Some("bob"));
    }

    #[test]
    fn credential_from_salted_password_matches_from_password() {
        for mechanism in [Mechanism::ScramSha256, Mechanism::ScramSha512] {
            let salted = salted_password(mechanism, "hunter2", b"pepper", 4096);
            assert_eq!(salted.len(), mechanism.digest_algorithm().output_len());
            let from_salted =
                ScramCredential::from_salted_password(mechanism, b"pepper", &salted, 4096);
            let from_password =
                ScramCredential::from_password(mechanism, "hunter2", b"pepper", 4096);
            assert_eq!(from_salted, from_password);
            assert_ne!(
                from_password,
                ScramCredential::from_password(mechanism, "hunter3", b"pepper", 4096)
            );
        }
        let c512 = ScramCredential::from_password(Mechanism::ScramSha512, "pencil", b"s", 4096);
        assert_eq!((c512.stored_key.len(), c512.server_key.len()), (64, 64));
    }

    #[test]
    fn plain_password_comparison() {
        assert!(plain_password_matches("secret", "secret"));
        assert!(!plain_password_matches("secret", "secreT"));
        assert!(!plain_password_matches("secret", "secret!"));
        assert!(!plain_password_matches("secret", ""));
    }
}
