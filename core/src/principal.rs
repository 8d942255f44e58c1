//! Who a connection is, as Kafka names it: `User:ANONYMOUS` before anything proves otherwise,
//! `User:<name>` after SASL, and for a TLS client certificate `User:` + its subject in RFC 2253
//! form, the string Java's `X500Principal.getName()` gives and Kafka's DEFAULT
//! `ssl.principal.mapping.rules` keeps. Parsing the subject here keeps it testable without
//! sockets.

/// A connection's principal before authentication (Kafka's `KafkaPrincipal.ANONYMOUS`).
pub const ANONYMOUS: &str = "User:ANONYMOUS";

/// `User:<name>`.
pub fn user(name: &str) -> String {
    format!("User:{name}")
}

/// `ssl.principal.mapping.rules`, as Kafka's `SslPrincipalMapper` reads them: a list of
/// `RULE:pattern/replacement/[L|U]` and `DEFAULT`, tried in order; the first whose pattern
/// matches the whole subject gives the principal's name (the replacement may use `$1` ...),
/// lower- or upper-cased with `L` or `U`; `DEFAULT` keeps the subject as it is. A subject no
/// rule matches has no principal, and its connection is refused.
#[derive(Debug, Clone)]
pub struct PrincipalMapper {
    rules: Vec<Rule>,
}

#[derive(Debug, Clone)]
enum Rule {
    Default,
    Replace { pattern: regex::Regex, replacement: String, case: Option<char> },
}

impl PrincipalMapper {
    pub fn parse(rules: &str) -> Result<PrincipalMapper, String> {
        let mut parsed = Vec::new();
        let mut rest = rules.trim();
        while !rest.is_empty() {
            if let Some(after) = rest.strip_prefix("DEFAULT") {
                parsed.push(Rule::Default);
                rest = after;
            } else if let Some(after) = rest.strip_prefix("RULE:") {
                let (pattern, after) = until_slash(after).ok_or_else(|| format!("{rest:?}: a RULE needs pattern/replacement/"))?;
                let (replacement, after) = until_slash(after).ok_or_else(|| format!("{rest:?}: a RULE needs pattern/replacement/"))?;
                let (case, after) = match after.chars().next() {
                    Some(c @ ('L' | 'U')) => (Some(c), &after[1..]),
                    _ => (None, after),
                };
                // Java's `matches()`: the pattern must match the whole subject.
                let pattern = regex::Regex::new(&format!("^(?:{pattern})$")).map_err(|e| format!("RULE pattern {pattern:?}: {e}"))?;
                parsed.push(Rule::Replace { pattern, replacement: java_replacement(&replacement), case });
                rest = after;
            } else {
                return Err(format!("{rest:?} is not a RULE:pattern/replacement/[LU] or DEFAULT"));
            }
            rest = rest.trim_start();
            rest = rest.strip_prefix(',').unwrap_or(rest).trim_start();
        }
        if parsed.is_empty() {
            parsed.push(Rule::Default);
        }
        Ok(PrincipalMapper { rules: parsed })
    }

    /// The principal's name for a certificate subject, or why there is none.
    pub fn map(&self, subject: &str) -> Result<String, String> {
        for rule in &self.rules {
            match rule {
                Rule::Default => return Ok(subject.to_owned()),
                Rule::Replace { pattern, replacement, case } if pattern.is_match(subject) => {
                    let name = pattern.replace_all(subject, replacement.as_str()).into_owned();
                    return Ok(match case {
                        Some('L') => name.to_lowercase(),
                        Some('U') => name.to_uppercase(),
                        _ => name,
                    });
                }
                Rule::Replace { .. } => {}
            }
        }
        Err(format!("no ssl.principal.mapping.rules rule applies to {subject:?}"))
    }
}

/// Text up to an unescaped `/`, with `\/` taken as `/`, and what follows the slash.
fn until_slash(text: &str) -> Option<(String, &str)> {
    let mut out = String::new();
    let mut chars = text.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some((_, '/')) => out.push('/'),
                Some((_, other)) => {
                    out.push('\\');
                    out.push(other);
                }
                None => out.push('\\'),
            },
            '/' => return Some((out, &text[i + 1..])),
            c => out.push(c),
        }
    }
    None
}

/// Java's `$1` group references in the form the regex crate reads unambiguously (`${1}`).
fn java_replacement(replacement: &str) -> String {
    let mut out = String::new();
    let mut chars = replacement.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '$' && chars.peek().is_some_and(char::is_ascii_digit) {
            let mut group = String::new();
            while let Some(d) = chars.peek().copied().filter(char::is_ascii_digit) {
                group.push(d);
                chars.next();
            }
            out.push_str(&format!("${{{group}}}"));
        } else if c == '$' {
            out.push_str("$$");
        } else {
            out.push(c);
        }
    }
    out
}

/// The subject of a DER X.509 certificate in RFC 2253 form (`CN=alice,OU=eng,O=Acme,C=SE`), or
/// why it could not be read.
pub fn certificate_subject(der: &[u8]) -> Result<String, &'static str> {
    let (certificate, _) = read(der, 0x30).ok_or("not a DER certificate")?;
    let (mut tbs, _) = read(certificate, 0x30).ok_or("no tbsCertificate")?;
    // [0] EXPLICIT version, present from v2 on.
    if tbs.first() == Some(&0xA0) {
        tbs = any(tbs).ok_or("bad version")?.1;
    }
    for (tag, what) in [(0x02, "bad serial number"), (0x30, "bad signature algorithm"), (0x30, "bad issuer"), (0x30, "bad validity")] {
        tbs = read(tbs, tag).ok_or(what)?.1;
    }
    let (subject, _) = read(tbs, 0x30).ok_or("bad subject")?;
    rfc2253(subject)
}

/// An X.501 `Name` (the contents of its SEQUENCE) in RFC 2253 form: last RDN first.
fn rfc2253(mut name: &[u8]) -> Result<String, &'static str> {
    let mut rdns = Vec::new();
    while !name.is_empty() {
        let (mut set, rest) = read(name, 0x31).ok_or("bad relative distinguished name")?;
        name = rest;
        let mut avas = Vec::new();
        while !set.is_empty() {
            let (mut ava, rest) = read(set, 0x30).ok_or("bad attribute")?;
            set = rest;
            let (oid, after) = read(ava, 0x06).ok_or("bad attribute type")?;
            ava = after;
            let (tag, value, whole) = any_with_tag(ava).ok_or("bad attribute value")?;
            let oid = dotted(oid).ok_or("bad attribute type")?;
            let text = match (keyword(&oid), tag) {
                (Some(keyword), 0x0C | 0x13 | 0x16 | 0x14) => {
                    format!("{keyword}={}", escape(std::str::from_utf8(value).map_err(|_| "attribute value is not text")?))
                }
                (Some(keyword), 0x1E) => format!("{keyword}={}", escape(&bmp(value).ok_or("bad BMPString")?)),
                // Unknown types and odd string types are written as the DER value in hex.
                (Some(keyword), _) => format!("{keyword}=#{}", hex(whole)),
                (None, _) => format!("{oid}=#{}", hex(whole)),
            };
            avas.push(text);
        }
        rdns.push(avas.join("+"));
    }
    rdns.reverse();
    Ok(rdns.join(","))
}

fn keyword(oid: &str) -> Option<&'static str> {
    Some(match oid {
        "2.5.4.3" => "CN",
        "2.5.4.6" => "C",
        "2.5.4.7" => "L",
        "2.5.4.8" => "ST",
        "2.5.4.9" => "STREET",
        "2.5.4.10" => "O",
        "2.5.4.11" => "OU",
        "0.9.2342.19200300.100.1.1" => "UID",
        "0.9.2342.19200300.100.1.25" => "DC",
        _ => return None,
    })
}

/// RFC 2253 section 2.4: `,+"\<>;` escaped everywhere, `#` and space at the start, space at the end.
fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (i == 0 && (c == '#' || c == ' '))
            || (i == last && c == ' ');
        if special {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn bmp(value: &[u8]) -> Option<String> {
    if value.len() % 2 != 0 {
        return None;
    }
    let units: Vec<u16> = value.chunks_exact(2).map(|c| u16::from_be_bytes([c[0], c[1]])).collect();
    String::from_utf16(&units).ok()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn dotted(oid: &[u8]) -> Option<String> {
    let (&first, rest) = oid.split_first()?;
    let mut parts = vec![u64::from(first / 40).min(2), u64::from(first) - 40 * u64::from(first / 40).min(2)];
    let mut value: u64 = 0;
    for &b in rest {
        value = value.checked_mul(128)? | u64::from(b & 0x7F);
        if b & 0x80 == 0 {
            parts.push(value);
            value = 0;
        }
    }
    Some(parts.iter().map(u64::to_string).collect::<Vec<_>>().join("."))
}

/// The contents of the element at the start of `der` if its tag is `tag`, and what follows.
fn read(der: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (found, contents, _, rest) = element(der)?;
    (found == tag).then_some((contents, rest))
}

fn any(der: &[u8]) -> Option<(&[u8], &[u8])> {
    let (_, contents, _, rest) = element(der)?;
    Some((contents, rest))
}

/// Tag, contents and the whole element.
fn any_with_tag(der: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (tag, contents, whole, _) = element(der)?;
    Some((tag, contents, whole))
}

/// One DER element: (tag, contents, the whole element, what follows it).
fn element(der: &[u8]) -> Option<(u8, &[u8], &[u8], &[u8])> {
    let tag = *der.first()?;
    let first = *der.get(1)?;
    let (len, header) = if first < 0x80 {
        (usize::from(first), 2)
    } else {
        let n = usize::from(first & 0x7F);
        if n == 0 || n > 4 {
            return None;
        }
        let bytes = der.get(2..2 + n)?;
        (bytes.iter().fold(0usize, |acc, &b| (acc << 8) | usize::from(b)), 2 + n)
    };
    let end = header.checked_add(len)?;
    let contents = der.get(header..end)?;
    Some((tag, contents, &der[..end], &der[end..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// DER helpers to build names the way a CA writes them.
    fn tlv(tag: u8, contents: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        if contents.len() < 0x80 {
            out.push(contents.len() as u8);
        } else {
            out.extend([0x82, (contents.len() >> 8) as u8, contents.len() as u8]);
        }
        out.extend_from_slice(contents);
        out
    }

    fn ava(oid: &[u8], tag: u8, value: &[u8]) -> Vec<u8> {
        tlv(0x30, &[tlv(0x06, oid), tlv(tag, value)].concat())
    }

    const CN: &[u8] = &[0x55, 0x04, 0x03];
    const O: &[u8] = &[0x55, 0x04, 0x0A];
    const C: &[u8] = &[0x55, 0x04, 0x06];
    const EMAIL: &[u8] = &[0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x09, 0x01];

    fn certificate(subject: &[u8]) -> Vec<u8> {
        let tbs = [
            tlv(0xA0, &tlv(0x02, &[2])),
            tlv(0x02, &[1, 2, 3]),
            tlv(0x30, &tlv(0x06, &[0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x04, 0x03, 0x02])),
            tlv(0x30, &tlv(0x31, &ava(CN, 0x0C, b"Test CA"))),
            tlv(0x30, &[tlv(0x17, b"250101000000Z"), tlv(0x17, b"350101000000Z")].concat()),
            tlv(0x30, subject),
            tlv(0x30, &[]),
        ]
        .concat();
        tlv(0x30, &[tlv(0x30, &tbs), tlv(0x30, &[]), tlv(0x03, &[0])].concat())
    }

    #[test]
    fn a_subject_reads_as_java_writes_it_most_specific_first() {
        let subject = [
            tlv(0x31, &ava(C, 0x13, b"SE")),
            tlv(0x31, &ava(O, 0x0C, b"Acme, Inc")),
            tlv(0x31, &[ava(CN, 0x0C, b"alice"), ava(EMAIL, 0x16, b"a@x")].concat()),
        ]
        .concat();
        assert_eq!(certificate_subject(&certificate(&subject)).unwrap(), "CN=alice+1.2.840.113549.1.9.1=#1603614078,O=Acme\\, Inc,C=SE");
    }

    #[test]
    fn special_characters_are_escaped_as_rfc_2253_says() {
        assert_eq!(escape("#a b "), "\\#a b\\ ");
        assert_eq!(escape(" x;y<z>\"\\"), "\\ x\\;y\\<z\\>\\\"\\\\");
        assert_eq!(escape("plain"), "plain");
    }

    #[test]
    fn mapping_rules_work_as_kafkas_ssl_principal_mapper() {
        let mapper = PrincipalMapper::parse(
            "RULE:^CN=(.*?),OU=ServiceUsers.*$/$1/, RULE:^CN=(.*?),OU=(.*?),O=(.*?),L=.*$/$1@$3/L, DEFAULT",
        )
        .unwrap();
        assert_eq!(mapper.map("CN=kafka-broker,OU=ServiceUsers,O=Acme").unwrap(), "kafka-broker");
        assert_eq!(mapper.map("CN=Alice,OU=eng,O=ACME,L=Umea").unwrap(), "alice@acme");
        assert_eq!(mapper.map("CN=bob").unwrap(), "CN=bob");
        let strict = PrincipalMapper::parse("RULE:^CN=([a-z]+)$/$1/U").unwrap();
        assert_eq!(strict.map("CN=carol").unwrap(), "CAROL");
        assert!(strict.map("CN=carol,O=x").unwrap_err().contains("no ssl.principal.mapping.rules rule applies"));
        assert_eq!(PrincipalMapper::parse("RULE:^CN=(.*)$/x\\/$1/").unwrap().map("CN=d").unwrap(), "x/d");
        assert!(PrincipalMapper::parse("RULE:^CN=(/$1").is_err());
        assert!(PrincipalMapper::parse("SOMETHING").is_err());
        assert_eq!(PrincipalMapper::parse("").unwrap().map("CN=e").unwrap(), "CN=e");
    }

    #[test]
    fn garbage_is_refused_not_misread() {
        assert!(certificate_subject(b"").is_err());
        assert!(certificate_subject(&[0x30, 0x82, 0xFF]).is_err());
        let mut cert = certificate(&tlv(0x31, &ava(CN, 0x0C, b"alice")));
        cert.truncate(cert.len() - 30);
        assert!(certificate_subject(&cert).is_err());
        assert_eq!(dotted(&[0x2A, 0x86, 0x48]).unwrap(), "1.2.840");
    }
}
