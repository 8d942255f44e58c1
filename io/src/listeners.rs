//! Named listeners and their security, with Kafka's settings: `listeners`,
//! `listener.security.protocol.map`, `advertised.listeners`, `inter.broker.listener.name`,
//! `ssl.*` and `sasl.*`, each overridable per listener as `listener.name.<name>.<setting>`.

use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

use odradek_core::sasl::Mechanism;

/// `security.protocol` of a listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecurityProtocol {
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl SecurityProtocol {
    pub fn parse(name: &str) -> Option<SecurityProtocol> {
        Some(match name {
            "PLAINTEXT" => SecurityProtocol::Plaintext,
            "SSL" => SecurityProtocol::Ssl,
            "SASL_PLAINTEXT" => SecurityProtocol::SaslPlaintext,
            "SASL_SSL" => SecurityProtocol::SaslSsl,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "PLAINTEXT",
            SecurityProtocol::Ssl => "SSL",
            SecurityProtocol::SaslPlaintext => "SASL_PLAINTEXT",
            SecurityProtocol::SaslSsl => "SASL_SSL",
        }
    }

    pub fn tls(self) -> bool {
        matches!(self, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl)
    }

    pub fn sasl(self) -> bool {
        matches!(self, SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl)
    }
}

/// One resolved listener.
#[derive(Debug, Clone)]
pub struct Listener {
    /// Upper case, as Kafka normalises listener names.
    pub name: String,
    pub addr: SocketAddr,
    /// Host and port clients of this listener are told to use (Metadata, FindCoordinator).
    pub advertised: (String, u16),
    pub protocol: SecurityProtocol,
    pub ssl: Option<SslSettings>,
    pub sasl: Option<SaslSettings>,
}

/// `ssl.client.auth`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    None,
    Requested,
    Required,
}

#[derive(Debug, Clone)]
pub struct SslSettings {
    /// `ssl.keystore.location`: a PEM file with the private key and the certificate chain.
    pub keystore: PathBuf,
    /// `ssl.truststore.location`: PEM certificates of the CAs client certificates must chain to.
    pub truststore: Option<PathBuf>,
    pub client_auth: ClientAuth,
    /// `ssl.enabled.protocols`: TLSv1.2 and/or TLSv1.3.
    pub tls12: bool,
    pub tls13: bool,
    /// `ssl.principal.mapping.rules`: a client certificate's subject to a principal name.
    pub principal_mapper: odradek_core::principal::PrincipalMapper,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaslSettings {
    /// `sasl.enabled.mechanisms`, in the configured order (the order SaslHandshake reports).
    pub mechanisms: Vec<Mechanism>,
    /// PLAIN's users, from the listener's `plain.sasl.jaas.config` (`user_<name>="<password>"`).
    pub plain_users: BTreeMap<String, String>,
    /// `connections.max.reauth.ms` (KIP-368); `None` (0, the default): no re-authentication.
    pub max_reauth: Option<std::time::Duration>,
}

/// The listener settings as read, resolved once every setting is in (`resolve`).
#[derive(Debug, Clone, Default)]
pub struct ListenerSettings {
    /// `listeners`: names and addresses, in order.
    pub listeners: Vec<(String, SocketAddr)>,
    /// `listener.security.protocol.map`.
    pub protocol_map: Option<BTreeMap<String, SecurityProtocol>>,
    /// `advertised.listeners` by listener name.
    pub advertised: BTreeMap<String, (String, u16)>,
    /// `inter.broker.listener.name`.
    pub inter_broker: Option<String>,
    /// `security.inter.broker.protocol`, Kafka's older way of naming the inter-broker listener.
    pub inter_broker_protocol: Option<SecurityProtocol>,
    /// `controller.listener.names`: the listener in `listeners` that is the controller
    /// listener (quorum and controller traffic), not a client one. Only the first is used.
    pub controller_names: Vec<String>,
    /// Every `ssl.*`, `sasl.*` and `listener.name.*` setting, looked up per listener.
    pub security: BTreeMap<String, String>,
}

/// What a broker does not act on, named once at start: (setting, why).
pub type NotApplied = Vec<(String, &'static str)>;

/// The listeners once every setting is in.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub listeners: Vec<Listener>,
    pub controller: Option<Listener>,
    pub not_applied: NotApplied,
}

impl ListenerSettings {
    pub fn default_listener() -> Self {
        ListenerSettings {
            listeners: vec![("PLAINTEXT".into(), "127.0.0.1:9092".parse().expect("valid address"))],
            ..Default::default()
        }
    }

    /// Takes one setting if it is a listener or security one. `Ok(false)`: not ours.
    pub fn set(&mut self, key: &str, value: &str) -> Result<bool, String> {
        match key {
            "listeners" => self.listeners = parse_listeners(value)?,
            "advertised.listeners" => self.advertised = parse_advertised(value, &self.listeners)?,
            "listener.security.protocol.map" => self.protocol_map = Some(parse_protocol_map(value)?),
            "inter.broker.listener.name" => self.inter_broker = Some(value.trim().to_ascii_uppercase()),
            "connections.max.reauth.ms" => {
                self.security.insert(key.to_owned(), value.to_owned());
            }
            "controller.listener.names" => {
                self.controller_names =
                    value.split(',').map(|n| n.trim().to_ascii_uppercase()).filter(|n| !n.is_empty()).collect()
            }
            "security.inter.broker.protocol" => {
                self.inter_broker_protocol =
                    Some(SecurityProtocol::parse(value.trim()).ok_or_else(|| unknown_protocol(value.trim()))?)
            }
            _ if key.starts_with("ssl.") || key.starts_with("sasl.") || key.starts_with("listener.name.") => {
                self.security.insert(key.to_owned(), value.to_owned());
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// The client listeners and the controller listener (if `controller.listener.names` names
    /// one), with their security, or what is wrong with the settings.
    pub fn resolve(&self) -> Result<Resolved, String> {
        if self.listeners.is_empty() {
            return Err("listeners: at least one listener is needed".into());
        }
        let mut names: Vec<&str> = self.listeners.iter().map(|(n, _)| n.as_str()).collect();
        names.sort_unstable();
        if names.windows(2).any(|w| w[0] == w[1]) {
            return Err("listeners: each listener name may appear once".into());
        }
        for name in self.advertised.keys() {
            if !self.listeners.iter().any(|(n, _)| n == name) {
                return Err(format!("advertised.listeners: {name} is not in listeners"));
            }
        }
        let mut listeners = Vec::new();
        let mut used = BTreeMap::new();
        for (name, addr) in &self.listeners {
            let protocol = match &self.protocol_map {
                Some(map) => map.get(name).copied(),
                None => SecurityProtocol::parse(name),
            }
            .ok_or_else(|| format!("listener {name} has no security protocol in listener.security.protocol.map"))?;
            let ssl = protocol.tls().then(|| self.ssl_settings(name)).transpose()?;
            let sasl = protocol.sasl().then(|| self.sasl_settings(name)).transpose()?;
            let advertised = self.advertised.get(name).cloned().unwrap_or_else(|| (addr.ip().to_string(), addr.port()));
            listeners.push(Listener { name: name.clone(), addr: *addr, advertised, protocol, ssl, sasl });
            used.insert(name.clone(), protocol);
        }
        let controller = match self.controller_names.first() {
            Some(name) => {
                let at = listeners
                    .iter()
                    .position(|l| &l.name == name)
                    .ok_or_else(|| format!("controller.listener.names: {name} is not in listeners"))?;
                let controller = listeners.remove(at);
                if controller.protocol.sasl() {
                    return Err(format!("controller listener {name}: SASL between controllers is not supported; use SSL (mTLS) or PLAINTEXT"));
                }
                if self.inter_broker.as_ref() == Some(name) {
                    return Err(format!("inter.broker.listener.name: {name} is the controller listener"));
                }
                Some(controller)
            }
            None => None,
        };
        if listeners.is_empty() {
            return Err("listeners: a client listener is needed besides the controller listener".into());
        }
        if let Some(name) = &self.inter_broker {
            if !listeners.iter().any(|l| &l.name == name) {
                return Err(format!("inter.broker.listener.name: {name} is not in listeners"));
            }
        }
        Ok(Resolved { listeners, controller, not_applied: self.not_applied() })
    }

    /// The listener brokers replicate over: `inter.broker.listener.name`, else the first
    /// listener of `security.inter.broker.protocol`, else PLAINTEXT's, else the first.
    pub fn inter_broker_listener(&self) -> &str {
        if let Some(name) = &self.inter_broker {
            return name;
        }
        let protocol_of = |name: &str| match &self.protocol_map {
            Some(map) => map.get(name).copied(),
            None => SecurityProtocol::parse(name),
        };
        let by_protocol = self.inter_broker_protocol.and_then(|p| {
            self.listeners.iter().find(|(n, _)| protocol_of(n) == Some(p)).map(|(n, _)| n.as_str())
        });
        let client = |n: &String| !self.controller_names.first().is_some_and(|c| c == n);
        by_protocol
            .or_else(|| self.listeners.iter().find(|(n, _)| n == "PLAINTEXT").map(|(n, _)| n.as_str()))
            .or_else(|| self.listeners.iter().find(|(n, _)| client(n)).map(|(n, _)| n.as_str()))
            .unwrap_or("PLAINTEXT")
    }

    /// A listener's value of `setting`: `listener.name.<name>.<setting>` first, then `<setting>`.
    fn lookup(&self, listener: &str, setting: &str) -> Option<&str> {
        let prefixed = format!("listener.name.{}.{setting}", listener.to_ascii_lowercase());
        self.security.get(&prefixed).or_else(|| self.security.get(setting)).map(|v| v.trim())
    }

    fn ssl_settings(&self, listener: &str) -> Result<SslSettings, String> {
        let setting = |s: &str| self.lookup(listener, s);
        let named = |s: &str| format!("listener {listener}: {s}");
        for store in ["ssl.keystore.type", "ssl.truststore.type"] {
            if let Some(kind) = setting(store).filter(|k| !k.eq_ignore_ascii_case("PEM")) {
                return Err(named(&format!(
                    "{store}={kind} is not supported: odradek reads PEM files (convert a keystore with \
                     `openssl pkcs12 -in store.p12 -nodes`, or a JKS one with keytool -importkeystore first)"
                )));
            }
        }
        if setting("ssl.key.password").is_some() {
            return Err(named("ssl.key.password: encrypted private keys are not supported; give the key unencrypted in a file only the broker can read"));
        }
        for inline in ["ssl.keystore.key", "ssl.keystore.certificate.chain", "ssl.truststore.certificates"] {
            if setting(inline).is_some() {
                return Err(named(&format!("{inline}: PEM given inline is not supported; put it in a file and name it with the .location setting")));
            }
        }
        let keystore = setting("ssl.keystore.location")
            .ok_or_else(|| named("ssl.keystore.location is required: a PEM file with the private key and its certificate chain"))?;
        let client_auth = match setting("ssl.client.auth").unwrap_or("none") {
            "none" => ClientAuth::None,
            "requested" => ClientAuth::Requested,
            "required" => ClientAuth::Required,
            other => return Err(named(&format!("ssl.client.auth={other}: expected none, requested or required"))),
        };
        let truststore = setting("ssl.truststore.location").map(PathBuf::from);
        if client_auth != ClientAuth::None && truststore.is_none() {
            return Err(named("ssl.client.auth needs ssl.truststore.location, the CAs client certificates must chain to"));
        }
        let (mut tls12, mut tls13) = (false, false);
        for version in setting("ssl.enabled.protocols").unwrap_or("TLSv1.2,TLSv1.3").split(',').map(str::trim) {
            match version {
                "TLSv1.2" => tls12 = true,
                "TLSv1.3" => tls13 = true,
                "" => {}
                other => return Err(named(&format!("ssl.enabled.protocols: {other} is not supported (TLSv1.2 and TLSv1.3 are)"))),
            }
        }
        if !tls12 && !tls13 {
            return Err(named("ssl.enabled.protocols names no protocol"));
        }
        let principal_mapper = odradek_core::principal::PrincipalMapper::parse(setting("ssl.principal.mapping.rules").unwrap_or("DEFAULT"))
            .map_err(|e| named(&format!("ssl.principal.mapping.rules: {e}")))?;
        Ok(SslSettings { keystore: PathBuf::from(keystore), truststore, client_auth, tls12, tls13, principal_mapper })
    }

    fn sasl_settings(&self, listener: &str) -> Result<SaslSettings, String> {
        let named = |s: &str| format!("listener {listener}: {s}");
        let enabled = self.lookup(listener, "sasl.enabled.mechanisms").unwrap_or("PLAIN,SCRAM-SHA-256,SCRAM-SHA-512");
        let mut mechanisms = Vec::new();
        for name in enabled.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let mechanism = Mechanism::parse(name).ok_or_else(|| {
                named(&match name {
                    "GSSAPI" => "sasl.enabled.mechanisms: GSSAPI (Kerberos) is not supported; use SCRAM-SHA-512, SCRAM-SHA-256 or PLAIN".to_owned(),
                    _ => format!("sasl.enabled.mechanisms: {name} is not supported (PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512 are)"),
                })
            })?;
            if !mechanisms.contains(&mechanism) {
                mechanisms.push(mechanism);
            }
        }
        if mechanisms.is_empty() {
            return Err(named("sasl.enabled.mechanisms names no mechanism"));
        }
        let jaas_key = format!("listener.name.{}.plain.sasl.jaas.config", listener.to_ascii_lowercase());
        let plain_users = match self.security.get(&jaas_key) {
            Some(jaas) => parse_plain_jaas(jaas).map_err(|e| named(&format!("{jaas_key}: {e}")))?,
            None => BTreeMap::new(),
        };
        let max_reauth = match self.lookup(listener, "connections.max.reauth.ms") {
            None => None,
            Some(ms) => {
                let ms: u64 = ms.parse().map_err(|_| named(&format!("connections.max.reauth.ms: {ms:?} is not a number of milliseconds")))?;
                (ms > 0).then(|| std::time::Duration::from_millis(ms))
            }
        };
        Ok(SaslSettings { mechanisms, plain_users, max_reauth })
    }

    /// The security settings read but not acted on.
    fn not_applied(&self) -> NotApplied {
        let acted_on = [
            "ssl.keystore.type", "ssl.keystore.location", "ssl.truststore.type", "ssl.truststore.location",
            "ssl.client.auth", "ssl.enabled.protocols", "ssl.principal.mapping.rules", "sasl.enabled.mechanisms",
            "plain.sasl.jaas.config", "connections.max.reauth.ms",
        ];
        let setting_of = |key: &str| -> String {
            match key.strip_prefix("listener.name.") {
                Some(rest) => rest.split_once('.').map_or(rest, |(_, s)| s).to_owned(),
                None => key.to_owned(),
            }
        };
        self.security
            .keys()
            .filter(|k| !acted_on.contains(&setting_of(k).as_str()))
            .map(|k| (k.clone(), "odradek does not act on it"))
            .collect()
    }
}

fn unknown_protocol(name: &str) -> String {
    format!("{name:?} is not a security protocol (PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL)")
}

/// `NAME://host:port,...`; a bare `host:port` is odradek's shorthand for PLAINTEXT. An empty
/// host listens on every address, as in Kafka.
pub fn parse_listeners(value: &str) -> Result<Vec<(String, SocketAddr)>, String> {
    let mut out = Vec::new();
    for item in value.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (name, addr) = match item.split_once("://") {
            Some((name, addr)) => (name.to_ascii_uppercase(), addr),
            None => ("PLAINTEXT".to_owned(), item),
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
            return Err(format!("{item:?}: {name:?} is not a listener name"));
        }
        let (host, port) = split_host_port(addr).ok_or_else(|| format!("{item:?} is not NAME://host:port"))?;
        let host = if host.is_empty() { "0.0.0.0" } else { host };
        let resolved = (host, port)
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| format!("{item:?}: cannot resolve {host:?}"))?;
        out.push((name, resolved));
    }
    if out.is_empty() {
        return Err("no listener given".into());
    }
    Ok(out)
}

fn split_host_port(addr: &str) -> Option<(&str, u16)> {
    let (host, port) = addr.rsplit_once(':')?;
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    Some((host, port.parse().ok()?))
}

/// `NAME://host:port,...`; a bare `host:port` advertises the first listener.
fn parse_advertised(value: &str, listeners: &[(String, SocketAddr)]) -> Result<BTreeMap<String, (String, u16)>, String> {
    let mut out = BTreeMap::new();
    for item in value.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (name, addr) = match item.split_once("://") {
            Some((name, addr)) => (name.to_ascii_uppercase(), addr),
            None => (listeners.first().map_or_else(|| "PLAINTEXT".to_owned(), |(n, _)| n.clone()), item),
        };
        let (host, port) = split_host_port(addr).ok_or_else(|| format!("{item:?} is not NAME://host:port"))?;
        if host.is_empty() {
            return Err(format!("{item:?}: an advertised listener needs a host clients can reach"));
        }
        if out.insert(name.clone(), (host.to_owned(), port)).is_some() {
            return Err(format!("{name} is advertised twice"));
        }
    }
    Ok(out)
}

/// `NAME:PROTOCOL,...`.
fn parse_protocol_map(value: &str) -> Result<BTreeMap<String, SecurityProtocol>, String> {
    let mut out = BTreeMap::new();
    for item in value.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (name, protocol) = item.split_once(':').ok_or_else(|| format!("{item:?} is not NAME:PROTOCOL"))?;
        let protocol = SecurityProtocol::parse(protocol.trim()).ok_or_else(|| unknown_protocol(protocol.trim()))?;
        out.insert(name.trim().to_ascii_uppercase(), protocol);
    }
    Ok(out)
}

/// PLAIN's users from Kafka's broker JAAS line:
/// `org.apache.kafka.common.security.plain.PlainLoginModule required username="admin"
/// password="admin-secret" user_admin="admin-secret" user_alice="alice-secret";`
/// (`username`/`password` are what the broker itself logs in with; `user_<name>` are the users).
fn parse_plain_jaas(value: &str) -> Result<BTreeMap<String, String>, String> {
    let value = value.trim().trim_end_matches(';').trim();
    let rest = value
        .strip_prefix("org.apache.kafka.common.security.plain.PlainLoginModule")
        .ok_or("expected org.apache.kafka.common.security.plain.PlainLoginModule")?
        .trim_start();
    let mut rest = rest
        .strip_prefix("required")
        .or_else(|| rest.strip_prefix("requisite"))
        .or_else(|| rest.strip_prefix("sufficient"))
        .or_else(|| rest.strip_prefix("optional"))
        .ok_or("expected a control flag (required) after the login module")?;
    let mut users = BTreeMap::new();
    loop {
        rest = rest.trim_start();
        if rest.is_empty() {
            break;
        }
        let (key, after) = rest.split_once('=').ok_or_else(|| format!("expected key=\"value\" at {rest:?}"))?;
        let after = after.trim_start().strip_prefix('"').ok_or_else(|| format!("the value of {} must be quoted", key.trim()))?;
        let end = after.find('"').ok_or_else(|| format!("the value of {} is not closed", key.trim()))?;
        if let Some(user) = key.trim().strip_prefix("user_") {
            users.insert(user.to_owned(), after[..end].to_owned());
        }
        rest = &after[end + 1..];
    }
    Ok(users)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> ListenerSettings {
        let mut s = ListenerSettings::default_listener();
        for (k, v) in pairs {
            assert!(s.set(k, v).unwrap(), "{k} not taken");
        }
        s
    }

    #[test]
    fn named_listeners_take_their_protocol_and_advertised_address() {
        let s = settings(&[
            ("listeners", "PLAINTEXT://127.0.0.1:9092,client://:9093,SASL_SSL://localhost:9094"),
            ("listener.security.protocol.map", "PLAINTEXT:PLAINTEXT,CLIENT:SASL_PLAINTEXT,SASL_SSL:SASL_SSL"),
            ("advertised.listeners", "CLIENT://broker-1.example:19093"),
            ("ssl.keystore.location", "/etc/odradek/broker.pem"),
            ("listener.name.client.sasl.enabled.mechanisms", "SCRAM-SHA-512"),
            (
                "listener.name.client.plain.sasl.jaas.config",
                r#"org.apache.kafka.common.security.plain.PlainLoginModule required username="a" password="b" user_alice="alice-secret";"#,
            ),
        ]);
        let Resolved { listeners, not_applied, .. } = s.resolve().unwrap();
        assert!(not_applied.is_empty(), "{not_applied:?}");
        let names: Vec<_> = listeners.iter().map(|l| (l.name.as_str(), l.protocol, l.addr.port())).collect();
        assert_eq!(
            names,
            [("PLAINTEXT", SecurityProtocol::Plaintext, 9092), ("CLIENT", SecurityProtocol::SaslPlaintext, 9093), ("SASL_SSL", SecurityProtocol::SaslSsl, 9094)]
        );
        assert_eq!(listeners[1].addr.ip().to_string(), "0.0.0.0");
        assert_eq!(listeners[1].advertised, ("broker-1.example".to_owned(), 19093));
        assert_eq!(listeners[0].advertised, ("127.0.0.1".to_owned(), 9092));
        let client = listeners[1].sasl.as_ref().unwrap();
        assert_eq!(client.mechanisms, [Mechanism::ScramSha512]);
        assert_eq!(client.plain_users.get("alice").map(String::as_str), Some("alice-secret"));
        assert!(listeners[1].ssl.is_none());
        let ssl = listeners[2].ssl.as_ref().unwrap();
        assert_eq!((ssl.client_auth, ssl.tls12, ssl.tls13), (ClientAuth::None, true, true));
        assert_eq!(listeners[2].sasl.as_ref().unwrap().mechanisms.len(), 3);
        assert_eq!(s.inter_broker_listener(), "PLAINTEXT");
    }

    #[test]
    fn bad_security_settings_are_refused_with_the_setting_named() {
        let refused = |pairs: &[(&str, &str)], needle: &str| {
            let err = settings(pairs).resolve().unwrap_err();
            assert!(err.contains(needle), "{err:?} lacks {needle:?}");
        };
        refused(&[("listeners", "CLIENT://127.0.0.1:1")], "CLIENT has no security protocol");
        refused(&[("listeners", "SSL://127.0.0.1:1")], "ssl.keystore.location is required");
        refused(&[("listeners", "SSL://127.0.0.1:1"), ("ssl.keystore.type", "JKS"), ("ssl.keystore.location", "k")], "JKS is not supported");
        refused(
            &[("listeners", "SSL://127.0.0.1:1"), ("ssl.keystore.location", "k"), ("ssl.client.auth", "required")],
            "needs ssl.truststore.location",
        );
        refused(&[("listeners", "SASL_PLAINTEXT://127.0.0.1:1"), ("sasl.enabled.mechanisms", "GSSAPI")], "Kerberos) is not supported");
        refused(
            &[("listeners", "SSL://127.0.0.1:1"), ("ssl.keystore.location", "k"), ("ssl.principal.mapping.rules", "RULE:^CN=(/x")],
            "ssl.principal.mapping.rules",
        );
        refused(&[("listeners", "SASL_PLAINTEXT://127.0.0.1:1"), ("sasl.enabled.mechanisms", "OAUTHBEARER")], "OAUTHBEARER is not supported");
        refused(&[("listeners", "A://127.0.0.1:1,A://127.0.0.1:2"), ("listener.security.protocol.map", "A:PLAINTEXT")], "once");
        refused(&[("advertised.listeners", "OTHER://h:1")], "OTHER is not in listeners");
        refused(&[("inter.broker.listener.name", "OTHER")], "OTHER is not in listeners");
        let err = ListenerSettings::default().set("listener.security.protocol.map", "A:TLS").unwrap_err();
        assert!(err.contains("not a security protocol"), "{err}");
    }

    #[test]
    fn the_inter_broker_listener_follows_kafkas_settings() {
        let base = [("listeners", "EXTERNAL://127.0.0.1:1,INTERNAL://127.0.0.1:2"), ("listener.security.protocol.map", "EXTERNAL:PLAINTEXT,INTERNAL:PLAINTEXT")];
        assert_eq!(settings(&base).inter_broker_listener(), "EXTERNAL");
        let mut named = settings(&base);
        named.set("inter.broker.listener.name", "internal").unwrap();
        assert_eq!(named.inter_broker_listener(), "INTERNAL");
    }

    #[test]
    fn the_controller_listener_is_taken_out_of_the_client_listeners() {
        let s = settings(&[
            ("listeners", "PLAINTEXT://127.0.0.1:1,CONTROLLER://127.0.0.1:2"),
            ("listener.security.protocol.map", "PLAINTEXT:PLAINTEXT,CONTROLLER:SSL"),
            ("controller.listener.names", "controller"),
            ("listener.name.controller.ssl.keystore.location", "k.pem"),
        ]);
        let resolved = s.resolve().unwrap();
        assert_eq!(resolved.listeners.iter().map(|l| l.name.as_str()).collect::<Vec<_>>(), ["PLAINTEXT"]);
        let controller = resolved.controller.unwrap();
        assert_eq!((controller.name.as_str(), controller.addr.port(), controller.protocol), ("CONTROLLER", 2, SecurityProtocol::Ssl));
        let mut sasl = s.clone();
        sasl.set("listener.security.protocol.map", "PLAINTEXT:PLAINTEXT,CONTROLLER:SASL_SSL").unwrap();
        assert!(sasl.resolve().unwrap_err().contains("SASL between controllers is not supported"));
    }

    #[test]
    fn settings_odradek_does_not_act_on_are_named() {
        let s = settings(&[("ssl.cipher.suites", "X"), ("listener.name.plaintext.ssl.keystore.location", "k")]);
        let not_applied = s.resolve().unwrap().not_applied;
        assert_eq!(not_applied.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(), ["ssl.cipher.suites"]);
    }
}
