//! Kafka's ACL model and the authorization decision of its `StandardAuthorizer` (KRaft), as pure
//! logic: the bindings CreateAcls stores, the filters DescribeAcls and DeleteAcls select with, and
//! whether a principal from a host may perform an operation on a resource.
//!
//! The rules follow `StandardAuthorizerData` (Kafka 3.x/4.x):
//!
//! 1. A super user (`super.users`, e.g. `User:admin`) is allowed everything, ACLs or not.
//! 2. The ACLs that apply to a resource are those of its type whose pattern covers its name:
//!    LITERAL with the same name, the LITERAL wildcard `*`, and every PREFIXED pattern the name
//!    starts with.
//! 3. Of those, an ACL counts for the request when its principal is the request's or `User:*`,
//!    its host is the request's or `*`, and its operation is the requested one or ALL. An ALLOW
//!    of READ, WRITE, DELETE or ALTER also counts for DESCRIBE, an ALLOW of ALTER_CONFIGS for
//!    DESCRIBE_CONFIGS; a DENY only ever counts for its own operation (or ALL).
//! 4. Any counting DENY denies; otherwise any counting ALLOW allows; otherwise, when no ACL at all
//!    applies to the resource, `allow.everyone.if.no.acl.found` decides; otherwise deny.
//!
//! Codes are the wire codes of CreateAcls/DescribeAcls/DeleteAcls. The filter-only values
//! (UNKNOWN, ANY, MATCH) are not variants of the binding enums: a binding cannot hold them, and a
//! filter spells ANY as `None` (or [`PatternFilter::Any`]).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// The LITERAL resource name that matches every resource of its type.
pub const WILDCARD_RESOURCE: &str = "*";
/// The principal that matches every principal (Kafka's `WILDCARD_KAFKA_PRINCIPAL`). Kafka matches
/// it against any session principal, whatever its type, and so do we.
pub const WILDCARD_PRINCIPAL: &str = "User:*";
/// The host that matches every client address.
pub const WILDCARD_HOST: &str = "*";
/// The only name the CLUSTER resource has (Kafka's `Resource.CLUSTER_NAME`).
pub const CLUSTER_NAME: &str = "kafka-cluster";

/// A Kafka enum with wire codes: `code`, `from_code` (None for codes outside the set, including
/// the filter-only UNKNOWN/ANY), `name` (the Java enum name, which is also what Kafka's
/// `toString` prints), and `parse` for a CLI.
macro_rules! kafka_enum {
    (
        $(#[$meta:meta])*
        $ty:ident { $($(#[$vmeta:meta])* $variant:ident = $code:literal, $name:literal;)+ }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum $ty {
            $($(#[$vmeta])* $variant,)+
        }

        impl $ty {
            /// Every value, in code order.
            pub const ALL_VALUES: &'static [$ty] = &[$($ty::$variant,)+];

            pub fn code(self) -> i8 {
                match self {
                    $($ty::$variant => $code,)+
                }
            }

            pub fn from_code(code: i8) -> Option<Self> {
                match code {
                    $($code => Some($ty::$variant),)+
                    _ => None,
                }
            }

            pub fn name(self) -> &'static str {
                match self {
                    $($ty::$variant => $name,)+
                }
            }

            /// Case-insensitive, with or without underscores, so that both Kafka's enum name
            /// (`TRANSACTIONAL_ID`) and the PascalCase `kafka-acls` prints (`TransactionalId`)
            /// parse.
            pub fn parse(s: &str) -> Option<Self> {
                let wanted = normalize(s);
                Self::ALL_VALUES.iter().copied().find(|v| normalize(v.name()) == wanted)
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.name())
            }
        }
    };
}

fn normalize(s: &str) -> String {
    s.trim()
        .chars()
        .filter(|&c| c != '_' && c != '-')
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

kafka_enum! {
    /// Kafka's `ResourceType`; 0 UNKNOWN and 1 ANY are filter-only.
    ResourceType {
        Topic = 2, "TOPIC";
        Group = 3, "GROUP";
        Cluster = 4, "CLUSTER";
        TransactionalId = 5, "TRANSACTIONAL_ID";
        DelegationToken = 6, "DELEGATION_TOKEN";
        User = 7, "USER";
    }
}

kafka_enum! {
    /// Kafka's `PatternType` as a binding holds it; 0 UNKNOWN, 1 ANY and 2 MATCH are filter-only
    /// (see [`PatternFilter`]).
    PatternType {
        Literal = 3, "LITERAL";
        Prefixed = 4, "PREFIXED";
    }
}

kafka_enum! {
    /// Kafka's `AclOperation`; 0 UNKNOWN and 1 ANY are filter-only.
    Operation {
        All = 2, "ALL";
        Read = 3, "READ";
        Write = 4, "WRITE";
        Create = 5, "CREATE";
        Delete = 6, "DELETE";
        Alter = 7, "ALTER";
        Describe = 8, "DESCRIBE";
        ClusterAction = 9, "CLUSTER_ACTION";
        DescribeConfigs = 10, "DESCRIBE_CONFIGS";
        AlterConfigs = 11, "ALTER_CONFIGS";
        IdempotentWrite = 12, "IDEMPOTENT_WRITE";
        CreateTokens = 13, "CREATE_TOKENS";
        DescribeTokens = 14, "DESCRIBE_TOKENS";
    }
}

kafka_enum! {
    /// Kafka's `AclPermissionType`; 0 UNKNOWN and 1 ANY are filter-only.
    Permission {
        Deny = 2, "DENY";
        Allow = 3, "ALLOW";
    }
}

impl Operation {
    /// Whether an ALLOW of `self` also allows `requested`: `StandardAuthorizerData`'s
    /// IMPLIES_DESCRIBE and IMPLIES_DESCRIBE_CONFIGS. Only ALLOWs imply: a DENY of READ leaves
    /// DESCRIBE alone.
    pub fn allow_implies(self, requested: Operation) -> bool {
        use Operation::*;
        self == All
            || self == requested
            || match requested {
                Describe => matches!(self, Read | Write | Delete | Alter),
                DescribeConfigs => self == AlterConfigs,
                _ => false,
            }
    }
}

/// The wire code names of the filter-only values, for error messages that read like Kafka's.
fn filter_code_name(code: i8, match_allowed: bool) -> &'static str {
    match code {
        1 => "ANY",
        2 if match_allowed => "MATCH",
        _ => "UNKNOWN",
    }
}

/// One ACL: a resource pattern and an access-control entry, as CreateAcls carries it.
///
/// The derived order (resource type, name, pattern, principal, host, operation, permission) is the
/// order [`Acls`] iterates in, so DescribeAcls output does not depend on insertion order.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AclBinding {
    pub resource_type: ResourceType,
    pub resource_name: String,
    pub pattern_type: PatternType,
    /// `Type:name`, e.g. `User:alice`, or [`WILDCARD_PRINCIPAL`].
    pub principal: String,
    /// A client address as Java's `getHostAddress()` prints it, or [`WILDCARD_HOST`].
    pub host: String,
    pub operation: Operation,
    pub permission: Permission,
}

impl AclBinding {
    /// A binding from CreateAcls' wire fields, or the message for the creation's INVALID_REQUEST:
    /// the checks of Kafka's `AclControlManager.validateNewAcl` on the codes, then
    /// [`AclBinding::validate`].
    pub fn from_codes(
        resource_type: i8,
        resource_name: &str,
        pattern_type: i8,
        principal: &str,
        host: &str,
        operation: i8,
        permission: i8,
    ) -> Result<Self, String> {
        let resource_type = ResourceType::from_code(resource_type).ok_or_else(|| {
            format!(
                "Invalid resourceType {}",
                filter_code_name(resource_type, false)
            )
        })?;
        let pattern_type = PatternType::from_code(pattern_type).ok_or_else(|| {
            format!(
                "Invalid patternType {}",
                filter_code_name(pattern_type, true)
            )
        })?;
        let operation = Operation::from_code(operation)
            .ok_or_else(|| format!("Invalid operation {}", filter_code_name(operation, false)))?;
        let permission = Permission::from_code(permission).ok_or_else(|| {
            format!(
                "Invalid permissionType {}",
                filter_code_name(permission, false)
            )
        })?;
        let binding = AclBinding {
            resource_type,
            resource_name: resource_name.to_string(),
            pattern_type,
            principal: principal.to_string(),
            host: host.to_string(),
            operation,
            permission,
        };
        binding.validate()?;
        Ok(binding)
    }

    /// Kafka's checks on a new ACL beyond its codes (`AclApis.handleCreateAcls`, then
    /// `AclControlManager.validateNewAcl`), with their messages. The principal check is
    /// `SecurityUtils.parseKafkaPrincipal`'s: Kafka stores such an ACL and then fails every
    /// authorization that reaches it (`StandardAcl.kafkaPrincipal` throws), so we refuse it up
    /// front.
    pub fn validate(&self) -> Result<(), String> {
        if self.resource_type == ResourceType::Cluster && self.resource_name != CLUSTER_NAME {
            return Err(format!(
                "The only valid name for the CLUSTER resource is {CLUSTER_NAME}"
            ));
        }
        if self.resource_name.is_empty() {
            return Err("Invalid empty resource name".to_string());
        }
        if !self.principal.contains(':') {
            return Err(format!(
                "expected a string in format principalType:principalName but got {}",
                self.principal
            ));
        }
        check_lengths([&self.resource_name, &self.principal, &self.host])
    }
}

/// The longest resource name, principal or host an ACL may carry: Kafka's non-flexible string
/// limit. Flexible versions could send longer ones, which the metadata log's records (16-bit
/// lengths) could not hold.
pub const MAX_ACL_STRING_BYTES: usize = i16::MAX as usize;

fn check_lengths<'a>(strings: impl IntoIterator<Item = &'a String>) -> Result<(), String> {
    match strings.into_iter().find(|s| s.len() > MAX_ACL_STRING_BYTES) {
        Some(s) => Err(format!("a {}-byte resource name, principal or host is longer than {MAX_ACL_STRING_BYTES} bytes", s.len())),
        None => Ok(()),
    }
}

/// Kafka's `AclBinding.toString`, which `kafka-acls` prints.
impl fmt::Display for AclBinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "(pattern=ResourcePattern(resourceType={}, name={}, patternType={}), \
             entry=(principal={}, host={}, operation={}, permissionType={}))",
            self.resource_type,
            self.resource_name,
            self.pattern_type,
            self.principal,
            self.host,
            self.operation,
            self.permission
        )
    }
}

/// A filter's pattern type (Kafka's `PatternType` 1 ANY, 2 MATCH, 3 LITERAL, 4 PREFIXED).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum PatternFilter {
    /// Any pattern type; a name must equal the binding's name exactly.
    #[default]
    Any,
    /// The bindings that would apply to a resource of that name: the LITERAL name, the LITERAL
    /// wildcard, and every PREFIXED pattern the name starts with.
    Match,
    Literal,
    Prefixed,
}

impl PatternFilter {
    pub fn code(self) -> i8 {
        match self {
            PatternFilter::Any => 1,
            PatternFilter::Match => 2,
            PatternFilter::Literal => 3,
            PatternFilter::Prefixed => 4,
        }
    }

    pub fn from_code(code: i8) -> Option<Self> {
        match code {
            1 => Some(PatternFilter::Any),
            2 => Some(PatternFilter::Match),
            3 => Some(PatternFilter::Literal),
            4 => Some(PatternFilter::Prefixed),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            PatternFilter::Any => "ANY",
            PatternFilter::Match => "MATCH",
            PatternFilter::Literal => "LITERAL",
            PatternFilter::Prefixed => "PREFIXED",
        }
    }

    /// Case-insensitive, for a CLI.
    pub fn parse(s: &str) -> Option<Self> {
        let wanted = normalize(s);
        [
            PatternFilter::Any,
            PatternFilter::Match,
            PatternFilter::Literal,
            PatternFilter::Prefixed,
        ]
        .into_iter()
        .find(|v| v.name() == wanted)
    }
}

impl From<PatternType> for PatternFilter {
    fn from(p: PatternType) -> Self {
        match p {
            PatternType::Literal => PatternFilter::Literal,
            PatternType::Prefixed => PatternFilter::Prefixed,
        }
    }
}

/// A DescribeAcls/DeleteAcls filter (Kafka's `AclBindingFilter`); `None` means ANY. Matching is
/// `ResourcePatternFilter.matches` and `AccessControlEntryFilter.matches`: principal and host
/// compare as strings, so a filter for `User:alice` does not select `User:*` ACLs.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct AclBindingFilter {
    pub resource_type: Option<ResourceType>,
    pub resource_name: Option<String>,
    pub pattern: PatternFilter,
    pub principal: Option<String>,
    pub host: Option<String>,
    pub operation: Option<Operation>,
    pub permission: Option<Permission>,
}

impl AclBindingFilter {
    /// The filter that matches every binding (Kafka's `AclBindingFilter.ANY`).
    pub fn any() -> Self {
        Self::default()
    }

    /// The filter that matches exactly `binding`.
    pub fn exact(binding: &AclBinding) -> Self {
        AclBindingFilter {
            resource_type: Some(binding.resource_type),
            resource_name: Some(binding.resource_name.clone()),
            pattern: binding.pattern_type.into(),
            principal: Some(binding.principal.clone()),
            host: Some(binding.host.clone()),
            operation: Some(binding.operation),
            permission: Some(binding.permission),
        }
    }

    pub fn matches(&self, binding: &AclBinding) -> bool {
        self.matches_pattern(binding) && self.matches_entry(binding)
    }

    fn matches_pattern(&self, b: &AclBinding) -> bool {
        if self.resource_type.is_some_and(|t| t != b.resource_type) {
            return false;
        }
        let pattern_equal = PatternFilter::from(b.pattern_type) == self.pattern;
        if !matches!(self.pattern, PatternFilter::Any | PatternFilter::Match) && !pattern_equal {
            return false;
        }
        let Some(name) = &self.resource_name else {
            return true;
        };
        if self.pattern != PatternFilter::Match {
            return *name == b.resource_name;
        }
        match b.pattern_type {
            PatternType::Literal => {
                *name == b.resource_name || b.resource_name == WILDCARD_RESOURCE
            }
            PatternType::Prefixed => name.starts_with(b.resource_name.as_str()),
        }
    }

    fn matches_entry(&self, b: &AclBinding) -> bool {
        self.principal.as_ref().is_none_or(|p| *p == b.principal)
            && self.host.as_ref().is_none_or(|h| *h == b.host)
            && self.operation.is_none_or(|o| o == b.operation)
            && self.permission.is_none_or(|p| p == b.permission)
    }

    /// A filter from DescribeAcls'/DeleteAcls' wire fields (Kafka's ANY = 1 and so on), or the
    /// message for INVALID_REQUEST. UNKNOWN (0) and codes Kafka does not know (which its
    /// `fromCode` maps to UNKNOWN) are refused, with `AclControlManager.validateFilter`'s
    /// messages.
    pub fn from_codes(
        resource_type: i8,
        resource_name: Option<&str>,
        pattern_type: i8,
        principal: Option<&str>,
        host: Option<&str>,
        operation: i8,
        permission: i8,
    ) -> Result<Self, String> {
        const UNKNOWN_PATTERN: &str = "Unknown patternFilter.";
        const UNKNOWN_ENTRY: &str = "Unknown entryFilter.";
        let resource_type = match resource_type {
            1 => None,
            code => Some(ResourceType::from_code(code).ok_or(UNKNOWN_PATTERN)?),
        };
        let pattern = PatternFilter::from_code(pattern_type).ok_or(UNKNOWN_PATTERN)?;
        let operation = match operation {
            1 => None,
            code => Some(Operation::from_code(code).ok_or(UNKNOWN_ENTRY)?),
        };
        let permission = match permission {
            1 => None,
            code => Some(Permission::from_code(code).ok_or(UNKNOWN_ENTRY)?),
        };
        let filter = AclBindingFilter {
            resource_type,
            resource_name: resource_name.map(str::to_string),
            pattern,
            principal: principal.map(str::to_string),
            host: host.map(str::to_string),
            operation,
            permission,
        };
        check_lengths(filter.resource_name.iter().chain(&filter.principal).chain(&filter.host))?;
        Ok(filter)
    }
}

/// The ACLs of a cluster, in [`AclBinding`] order, indexed by resource type and name so that an
/// authorization looks up the names that can apply instead of scanning every ACL.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Acls {
    /// Never holds an empty inner map or set, so that equal ACL sets compare equal.
    by_resource: BTreeMap<ResourceType, BTreeMap<String, BTreeSet<AclBinding>>>,
    len: usize,
}

impl Acls {
    /// Adds `b`; false if it was already there (CreateAcls still reports success then, as Kafka
    /// does).
    pub fn add(&mut self, b: AclBinding) -> bool {
        let added = self
            .by_resource
            .entry(b.resource_type)
            .or_default()
            .entry(b.resource_name.clone())
            .or_default()
            .insert(b);
        self.len += usize::from(added);
        self.check_invariants();
        added
    }

    /// Removes `b`; false if it was not there.
    pub fn remove(&mut self, b: &AclBinding) -> bool {
        let Some(by_name) = self.by_resource.get_mut(&b.resource_type) else {
            return false;
        };
        let Some(set) = by_name.get_mut(b.resource_name.as_str()) else {
            return false;
        };
        let removed = set.remove(b);
        if set.is_empty() {
            by_name.remove(b.resource_name.as_str());
        }
        if by_name.is_empty() {
            self.by_resource.remove(&b.resource_type);
        }
        self.len -= usize::from(removed);
        self.check_invariants();
        removed
    }

    /// Removes and returns, in order, every binding `f` matches: one DeleteAcls filter.
    pub fn remove_matching(&mut self, f: &AclBindingFilter) -> Vec<AclBinding> {
        let doomed: Vec<AclBinding> = self.matching(f).cloned().collect();
        for b in &doomed {
            let removed = self.remove(b);
            assert!(removed, "matched binding {b} vanished before removal");
        }
        doomed
    }

    pub fn iter(&self) -> impl Iterator<Item = &AclBinding> {
        self.by_resource
            .values()
            .flat_map(|by_name| by_name.values())
            .flatten()
    }

    /// The bindings `f` selects, in order: DescribeAcls' answer.
    pub fn matching<'a>(&'a self, f: &'a AclBindingFilter) -> impl Iterator<Item = &'a AclBinding> {
        let types = self
            .by_resource
            .iter()
            .filter(move |(t, _)| f.resource_type.is_none_or(|want| want == **t));
        types
            .flat_map(|(_, by_name)| by_name.values())
            .flatten()
            .filter(move |b| f.matches(b))
    }

    /// The bindings on resources of type `resource_type`, in order.
    pub fn of_type(&self, resource_type: ResourceType) -> impl Iterator<Item = &AclBinding> {
        self.by_resource
            .get(&resource_type)
            .into_iter()
            .flat_map(|m| m.values())
            .flatten()
    }

    /// The bindings whose pattern covers the resource `name` of `resource_type`, whoever they are
    /// for: the LITERAL name, the LITERAL wildcard, and the PREFIXED patterns `name` starts with.
    /// One lookup per character of `name`, so bounded by the request's own size.
    pub fn applicable<'a>(
        &'a self,
        resource_type: ResourceType,
        name: &'a str,
    ) -> impl Iterator<Item = &'a AclBinding> {
        let by_name = self.by_resource.get(&resource_type);
        let prefix_ends = name.char_indices().map(|(i, c)| i + c.len_utf8());
        let named = prefix_ends
            .filter_map(move |end| Some((end, by_name?.get(&name[..end])?)))
            .flat_map(move |(end, set)| {
                set.iter()
                    .filter(move |b| b.pattern_type == PatternType::Prefixed || end == name.len())
            });
        // A resource literally named "*" already met the wildcard ACLs above.
        let wildcard = by_name
            .filter(|_| name != WILDCARD_RESOURCE)
            .and_then(|m| m.get(WILDCARD_RESOURCE))
            .into_iter()
            .flatten()
            .filter(|b| b.pattern_type == PatternType::Literal);
        named.chain(wildcard)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The index agrees with itself: every binding sits under its own type and name, no inner
    /// collection is empty, and `len` counts them.
    pub fn check_invariants(&self) {
        if !crate::INVARIANTS {
            return;
        }
        let mut count = 0;
        for (t, by_name) in &self.by_resource {
            assert!(!by_name.is_empty(), "empty name index left for {t}");
            for (name, set) in by_name {
                assert!(!set.is_empty(), "empty binding set left for {t} {name:?}");
                for b in set {
                    assert!(
                        b.resource_type == *t && b.resource_name == *name,
                        "{b} filed under {t} {name:?}"
                    );
                }
                count += set.len();
            }
        }
        assert_eq!(
            count, self.len,
            "len {} but {count} bindings indexed",
            self.len
        );
    }
}

/// Kafka's `super.users` and `allow.everyone.if.no.acl.found`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthorizerConfig {
    /// Principals as `Type:name`, e.g. `User:admin`; compared as strings with the session's.
    pub super_users: BTreeSet<String>,
    pub allow_everyone_if_no_acl_found: bool,
}

impl AuthorizerConfig {
    /// The `super.users` value as `StandardAuthorizer.getConfiguredSuperUsers` reads it:
    /// `;`-separated, trimmed, empty entries skipped, each a `Type:name` principal.
    pub fn parse_super_users(value: &str) -> Result<BTreeSet<String>, String> {
        let mut users = BTreeSet::new();
        for user in value.split(';').map(str::trim).filter(|u| !u.is_empty()) {
            if !user.contains(':') {
                return Err(format!(
                    "expected a string in format principalType:principalName but got {user}"
                ));
            }
            users.insert(user.to_string());
        }
        Ok(users)
    }
}

/// Whether `principal` connecting from `host` may perform `operation` on the resource
/// `resource_name` of `resource_type` (a concrete name, as Kafka's `authorize` only takes LITERAL
/// resources). See the module doc for the rules.
pub fn authorize(
    acls: &Acls,
    config: &AuthorizerConfig,
    principal: &str,
    host: &str,
    operation: Operation,
    resource_type: ResourceType,
    resource_name: &str,
) -> bool {
    if config.super_users.contains(principal) {
        return true;
    }
    // `MatchingRuleBuilder`: deny wins at once; an allow waits for a possible deny; a resource
    // with ACLs, none of them counting, is denied regardless of the default.
    let mut has_resource_acls = false;
    let mut allowed = false;
    for acl in acls.applicable(resource_type, resource_name) {
        has_resource_acls = true;
        match counting_permission(acl, principal, host, operation) {
            Some(Permission::Deny) => return false,
            Some(Permission::Allow) => allowed = true,
            None => {}
        }
    }
    allowed || (!has_resource_acls && config.allow_everyone_if_no_acl_found)
}

/// `StandardAuthorizerData.findResult`: the permission `acl` contributes to the request, or None
/// if it does not concern it. Assumes the resource already matched.
fn counting_permission(
    acl: &AclBinding,
    principal: &str,
    host: &str,
    operation: Operation,
) -> Option<Permission> {
    if acl.principal != principal && acl.principal != WILDCARD_PRINCIPAL {
        return None;
    }
    if acl.host != WILDCARD_HOST && acl.host != host {
        return None;
    }
    let counts = match acl.permission {
        Permission::Allow => acl.operation.allow_implies(operation),
        Permission::Deny => acl.operation == Operation::All || acl.operation == operation,
    };
    counts.then_some(acl.permission)
}

/// Kafka's `Authorizer.authorizeByResourceType` default (KIP-679), which `StandardAuthorizer`
/// does not override: whether `principal` from `host` may perform `operation` on at least one
/// resource of `resource_type`. The broker uses it to grant IDEMPOTENT_WRITE to whoever may WRITE
/// some topic.
///
/// Reproduced step by step, including what differs from [`authorize`]:
/// 1. an [`authorize`] on the literal resource name `hardcode` (Kafka's own probe, which lets
///    super users and `allow.everyone.if.no.acl.found` through); if that allows, allow;
/// 2. among the ACLs of the type for this principal (or `User:*`) and host (or `*`) whose
///    operation is exactly `operation` or ALL (no implied operations here), a DENY on the
///    LITERAL wildcard denies outright, and an ALLOW on it allows;
/// 3. otherwise allow if some allowed LITERAL name is neither denied literally nor covered by a
///    denied prefix, or some allowed prefix is not covered by a denied prefix; else deny.
pub fn authorize_any(
    acls: &Acls,
    config: &AuthorizerConfig,
    principal: &str,
    host: &str,
    operation: Operation,
    resource_type: ResourceType,
) -> bool {
    if authorize(
        acls,
        config,
        principal,
        host,
        operation,
        resource_type,
        "hardcode",
    ) {
        return true;
    }
    let mut deny: BTreeMap<PatternType, BTreeSet<&str>> = BTreeMap::new();
    let mut allow: BTreeMap<PatternType, BTreeSet<&str>> = BTreeMap::new();
    let mut wildcard_allow = false;
    for b in acls.of_type(resource_type) {
        let concerns_request = (b.host == host || b.host == WILDCARD_HOST)
            && (b.principal == principal || b.principal == WILDCARD_PRINCIPAL)
            && (b.operation == operation || b.operation == Operation::All);
        if !concerns_request {
            continue;
        }
        let wildcard =
            b.pattern_type == PatternType::Literal && b.resource_name == WILDCARD_RESOURCE;
        match b.permission {
            Permission::Deny if wildcard => return false,
            Permission::Allow if wildcard => wildcard_allow = true,
            Permission::Deny => {
                deny.entry(b.pattern_type)
                    .or_default()
                    .insert(&b.resource_name);
            }
            Permission::Allow => {
                allow
                    .entry(b.pattern_type)
                    .or_default()
                    .insert(&b.resource_name);
            }
        }
    }
    if wildcard_allow {
        return true;
    }
    let denied_literal = deny.get(&PatternType::Literal);
    let denied_prefixes = deny.get(&PatternType::Prefixed);
    allow
        .iter()
        .flat_map(|(p, names)| names.iter().map(move |n| (*p, *n)))
        .any(|(pattern, name)| {
            if pattern == PatternType::Literal && denied_literal.is_some_and(|d| d.contains(name)) {
                return false;
            }
            let mut prefixes = name.char_indices().map(|(i, c)| &name[..i + c.len_utf8()]);
            !prefixes.any(|prefix| denied_prefixes.is_some_and(|d| d.contains(prefix)))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALICE: &str = "User:alice";
    const BOB: &str = "User:bob";
    const HOST: &str = "10.0.0.1";

    fn acl(
        resource_type: ResourceType,
        name: &str,
        pattern_type: PatternType,
        principal: &str,
        host: &str,
        operation: Operation,
        permission: Permission,
    ) -> AclBinding {
        AclBinding {
            resource_type,
            resource_name: name.to_string(),
            pattern_type,
            principal: principal.to_string(),
            host: host.to_string(),
            operation,
            permission,
        }
    }

    /// A literal topic ACL from any host.
    fn topic(
        name: &str,
        principal: &str,
        operation: Operation,
        permission: Permission,
    ) -> AclBinding {
        acl(
            ResourceType::Topic,
            name,
            PatternType::Literal,
            principal,
            "*",
            operation,
            permission,
        )
    }

    fn prefixed_topic(
        name: &str,
        principal: &str,
        operation: Operation,
        permission: Permission,
    ) -> AclBinding {
        acl(
            ResourceType::Topic,
            name,
            PatternType::Prefixed,
            principal,
            "*",
            operation,
            permission,
        )
    }

    fn acls(bindings: impl IntoIterator<Item = AclBinding>) -> Acls {
        let mut acls = Acls::default();
        for b in bindings {
            assert!(acls.add(b));
        }
        acls
    }

    fn strict() -> AuthorizerConfig {
        AuthorizerConfig::default()
    }

    fn can(acls: &Acls, principal: &str, operation: Operation, topic: &str) -> bool {
        authorize(
            acls,
            &strict(),
            principal,
            HOST,
            operation,
            ResourceType::Topic,
            topic,
        )
    }

    use Operation::*;
    use Permission::*;

    #[test]
    fn deny_wins_over_allow_whatever_the_order() {
        let a = acls([
            topic("orders", ALICE, Read, Allow),
            topic("orders", ALICE, Read, Deny),
        ]);
        assert!(!can(&a, ALICE, Read, "orders"));
        // A wildcard allow does not undo a literal deny, nor a prefixed allow a wildcard deny.
        let a = acls([
            topic("*", ALICE, Read, Allow),
            topic("orders", ALICE, Read, Deny),
        ]);
        assert!(!can(&a, ALICE, Read, "orders"));
        assert!(can(&a, ALICE, Read, "payments"));
        let a = acls([
            prefixed_topic("ord", ALICE, Read, Allow),
            topic("*", ALICE, Read, Deny),
        ]);
        assert!(!can(&a, ALICE, Read, "orders"));
    }

    #[test]
    fn all_allow_covers_every_operation_and_all_deny_blocks_every_operation() {
        let a = acls([topic("orders", ALICE, All, Allow)]);
        for op in Operation::ALL_VALUES {
            assert!(can(&a, ALICE, *op, "orders"), "{op}");
        }
        assert!(!can(&a, BOB, Read, "orders"));
        let a = acls([
            topic("orders", ALICE, All, Allow),
            topic("orders", ALICE, All, Deny),
        ]);
        for op in Operation::ALL_VALUES {
            assert!(!can(&a, ALICE, *op, "orders"), "{op}");
        }
        let a = acls([
            topic("orders", ALICE, Write, Allow),
            topic("orders", ALICE, All, Deny),
        ]);
        assert!(!can(&a, ALICE, Write, "orders"));
    }

    #[test]
    fn write_implies_describe_but_not_read() {
        let a = acls([topic("orders", ALICE, Write, Allow)]);
        assert!(can(&a, ALICE, Write, "orders"));
        assert!(can(&a, ALICE, Describe, "orders"));
        assert!(!can(&a, ALICE, Read, "orders"));
        assert!(!can(&a, ALICE, DescribeConfigs, "orders"));
        for implying in [Read, Delete, Alter] {
            let a = acls([topic("orders", ALICE, implying, Allow)]);
            assert!(can(&a, ALICE, Describe, "orders"), "{implying}");
        }
        for not_implying in [
            Create,
            AlterConfigs,
            DescribeConfigs,
            ClusterAction,
            IdempotentWrite,
        ] {
            let a = acls([topic("orders", ALICE, not_implying, Allow)]);
            assert!(!can(&a, ALICE, Describe, "orders"), "{not_implying}");
        }
    }

    // Only ALLOWs imply (StandardAuthorizerData.findResult): denying READ must not deny DESCRIBE.
    #[test]
    fn deny_of_implying_operation_does_not_deny_describe() {
        let a = acls([
            topic("orders", ALICE, Describe, Allow),
            topic("orders", ALICE, Read, Deny),
        ]);
        assert!(can(&a, ALICE, Describe, "orders"));
        assert!(!can(&a, ALICE, Read, "orders"));
        let a = acls([
            topic("orders", ALICE, Write, Allow),
            topic("orders", ALICE, Read, Deny),
        ]);
        assert!(can(&a, ALICE, Describe, "orders"));
        let a = acls([
            topic("orders", ALICE, Write, Allow),
            topic("orders", ALICE, Describe, Deny),
        ]);
        assert!(!can(&a, ALICE, Describe, "orders"));
        assert!(can(&a, ALICE, Write, "orders"));
    }

    #[test]
    fn alter_configs_implies_describe_configs() {
        let a = acls([topic("orders", ALICE, AlterConfigs, Allow)]);
        assert!(can(&a, ALICE, DescribeConfigs, "orders"));
        assert!(can(&a, ALICE, AlterConfigs, "orders"));
        assert!(!can(&a, ALICE, Describe, "orders"));
        let a = acls([topic("orders", ALICE, DescribeConfigs, Allow)]);
        assert!(!can(&a, ALICE, AlterConfigs, "orders"));
        let a = acls([
            topic("orders", ALICE, AlterConfigs, Allow),
            topic("orders", ALICE, AlterConfigs, Deny),
        ]);
        assert!(can(&a, ALICE, DescribeConfigs, "orders"));
    }

    #[test]
    fn prefixed_and_wildcard_resources_match_by_name() {
        let a = acls([
            prefixed_topic("pay", ALICE, Read, Allow),
            topic("*", BOB, Read, Allow),
        ]);
        assert!(can(&a, ALICE, Read, "payments"));
        assert!(can(&a, ALICE, Read, "pay"));
        assert!(!can(&a, ALICE, Read, "pa"));
        assert!(!can(&a, ALICE, Read, "orders"));
        assert!(can(&a, BOB, Read, "payments"));
        assert!(can(&a, BOB, Read, "anything"));
        // A LITERAL name is not a prefix.
        let a = acls([topic("pay", ALICE, Read, Allow)]);
        assert!(!can(&a, ALICE, Read, "payments"));
        // Another resource type's ACLs never apply.
        let a = acls([acl(
            ResourceType::Group,
            "*",
            PatternType::Literal,
            ALICE,
            "*",
            Read,
            Allow,
        )]);
        assert!(!can(&a, ALICE, Read, "orders"));
        // A PREFIXED "*" is a prefix like any other, not a wildcard.
        let a = acls([prefixed_topic("*", ALICE, Read, Allow)]);
        assert!(!can(&a, ALICE, Read, "orders"));
        assert!(can(&a, ALICE, Read, "*orders"));
        // Prefixes are compared by character, multibyte ones included.
        let a = acls([prefixed_topic("é", ALICE, Read, Allow)]);
        assert!(can(&a, ALICE, Read, "été"));
    }

    #[test]
    fn wildcard_principal_and_host_match() {
        let a = acls([topic("orders", WILDCARD_PRINCIPAL, Read, Allow)]);
        assert!(can(&a, ALICE, Read, "orders"));
        assert!(can(&a, BOB, Read, "orders"));
        let a = acls([
            acl(
                ResourceType::Topic,
                "orders",
                PatternType::Literal,
                ALICE,
                HOST,
                Read,
                Allow,
            ),
            acl(
                ResourceType::Topic,
                "orders",
                PatternType::Literal,
                BOB,
                "10.0.0.2",
                Read,
                Allow,
            ),
        ]);
        assert!(can(&a, ALICE, Read, "orders"));
        assert!(
            !can(&a, BOB, Read, "orders"),
            "bob's ACL is for another host"
        );
        assert!(authorize(
            &a,
            &strict(),
            BOB,
            "10.0.0.2",
            Read,
            ResourceType::Topic,
            "orders"
        ));
        // A principal matches exactly, not by name alone nor case-insensitively.
        let a = acls([
            topic("orders", "User:Alice", Read, Allow),
            topic("orders", "Group:alice", Read, Allow),
        ]);
        assert!(!can(&a, ALICE, Read, "orders"));
        let a = acls([
            topic("orders", WILDCARD_PRINCIPAL, Read, Allow),
            acl(
                ResourceType::Topic,
                "orders",
                PatternType::Literal,
                WILDCARD_PRINCIPAL,
                HOST,
                Read,
                Deny,
            ),
        ]);
        assert!(!can(&a, ALICE, Read, "orders"));
        assert!(authorize(
            &a,
            &strict(),
            ALICE,
            "10.0.0.9",
            Read,
            ResourceType::Topic,
            "orders"
        ));
    }

    #[test]
    fn super_users_are_allowed_despite_denies() {
        let config = AuthorizerConfig {
            super_users: AuthorizerConfig::parse_super_users(" User:admin ;; User:ops").unwrap(),
            allow_everyone_if_no_acl_found: false,
        };
        assert_eq!(config.super_users.len(), 2);
        let a = acls([topic("*", WILDCARD_PRINCIPAL, All, Deny)]);
        assert!(authorize(
            &a,
            &config,
            "User:admin",
            HOST,
            Write,
            ResourceType::Topic,
            "orders"
        ));
        assert!(authorize(
            &Acls::default(),
            &config,
            "User:ops",
            HOST,
            ClusterAction,
            ResourceType::Cluster,
            CLUSTER_NAME
        ));
        assert!(!authorize(
            &a,
            &config,
            ALICE,
            HOST,
            Write,
            ResourceType::Topic,
            "orders"
        ));
        assert!(AuthorizerConfig::parse_super_users("admin").is_err());
    }

    #[test]
    fn allow_everyone_if_no_acl_found_only_for_resources_without_acls() {
        let open = AuthorizerConfig {
            allow_everyone_if_no_acl_found: true,
            ..AuthorizerConfig::default()
        };
        let empty = Acls::default();
        assert!(authorize(
            &empty,
            &open,
            ALICE,
            HOST,
            Read,
            ResourceType::Topic,
            "orders"
        ));
        assert!(!authorize(
            &empty,
            &strict(),
            ALICE,
            HOST,
            Read,
            ResourceType::Topic,
            "orders"
        ));
        // An ACL for someone else, or another operation, on the resource closes it to everyone.
        let a = acls([topic("orders", BOB, Write, Allow)]);
        assert!(!authorize(
            &a,
            &open,
            ALICE,
            HOST,
            Read,
            ResourceType::Topic,
            "orders"
        ));
        assert!(!authorize(
            &a,
            &open,
            BOB,
            HOST,
            Read,
            ResourceType::Topic,
            "orders"
        ));
        assert!(authorize(
            &a,
            &open,
            ALICE,
            HOST,
            Read,
            ResourceType::Topic,
            "payments"
        ));
        // Prefixed and wildcard ACLs count as ACLs on the resource.
        let a = acls([prefixed_topic("ord", BOB, Write, Allow)]);
        assert!(!authorize(
            &a,
            &open,
            ALICE,
            HOST,
            Read,
            ResourceType::Topic,
            "orders"
        ));
        let a = acls([topic("*", BOB, Write, Allow)]);
        assert!(!authorize(
            &a,
            &open,
            ALICE,
            HOST,
            Read,
            ResourceType::Topic,
            "payments"
        ));
        assert!(authorize(
            &a,
            &open,
            ALICE,
            HOST,
            Read,
            ResourceType::Group,
            "payments"
        ));
    }

    fn filter_fixture() -> Acls {
        acls([
            topic("payments", ALICE, Read, Allow),
            topic("*", BOB, Read, Allow),
            prefixed_topic("pay", ALICE, Write, Allow),
            prefixed_topic("payments.eu", ALICE, Write, Deny),
            prefixed_topic("ord", ALICE, Write, Allow),
            topic("orders", ALICE, Read, Deny),
            acl(
                ResourceType::Group,
                "payments",
                PatternType::Literal,
                ALICE,
                "*",
                Read,
                Allow,
            ),
        ])
    }

    fn selected(acls: &Acls, f: &AclBindingFilter) -> Vec<String> {
        acls.matching(f)
            .map(|b| format!("{}:{}:{}", b.resource_type, b.pattern_type, b.resource_name))
            .collect()
    }

    #[test]
    fn filters_select_like_kafkas_resource_pattern_filter() {
        let a = filter_fixture();
        let on_payments = |pattern| AclBindingFilter {
            resource_type: Some(ResourceType::Topic),
            resource_name: Some("payments".to_string()),
            pattern,
            ..AclBindingFilter::any()
        };
        assert_eq!(
            selected(&a, &on_payments(PatternFilter::Match)),
            [
                "TOPIC:LITERAL:*",
                "TOPIC:PREFIXED:pay",
                "TOPIC:LITERAL:payments"
            ]
        );
        assert_eq!(
            selected(&a, &on_payments(PatternFilter::Any)),
            ["TOPIC:LITERAL:payments"]
        );
        assert_eq!(
            selected(&a, &on_payments(PatternFilter::Literal)),
            ["TOPIC:LITERAL:payments"]
        );
        assert!(selected(&a, &on_payments(PatternFilter::Prefixed)).is_empty());
        let pay_prefixed = AclBindingFilter {
            resource_name: Some("pay".to_string()),
            pattern: PatternFilter::Prefixed,
            ..AclBindingFilter::any()
        };
        assert_eq!(selected(&a, &pay_prefixed), ["TOPIC:PREFIXED:pay"]);
        // MATCH without a name is every pattern type; a LITERAL "*" filter is the wildcard only.
        let all_topics = AclBindingFilter {
            resource_type: Some(ResourceType::Topic),
            pattern: PatternFilter::Match,
            ..AclBindingFilter::any()
        };
        assert_eq!(a.matching(&all_topics).count(), 6);
        let wildcard = AclBindingFilter {
            resource_name: Some("*".to_string()),
            pattern: PatternFilter::Literal,
            ..AclBindingFilter::any()
        };
        assert_eq!(selected(&a, &wildcard), ["TOPIC:LITERAL:*"]);
        assert_eq!(a.matching(&AclBindingFilter::any()).count(), a.len());
        // Entry fields compare exactly: alice's filter does not select User:* or bob.
        let alice_denies = AclBindingFilter {
            principal: Some(ALICE.into()),
            permission: Some(Deny),
            ..AclBindingFilter::any()
        };
        assert_eq!(
            selected(&a, &alice_denies),
            ["TOPIC:LITERAL:orders", "TOPIC:PREFIXED:payments.eu"]
        );
        let by_host = AclBindingFilter {
            host: Some(HOST.into()),
            ..AclBindingFilter::any()
        };
        assert_eq!(a.matching(&by_host).count(), 0);
    }

    #[test]
    fn match_filter_selects_what_authorize_consults() {
        let a = filter_fixture();
        for name in ["payments", "payments.eu.1", "orders", "x", "*", "pa"] {
            let f = AclBindingFilter {
                resource_type: Some(ResourceType::Topic),
                resource_name: Some(name.to_string()),
                pattern: PatternFilter::Match,
                ..AclBindingFilter::any()
            };
            let by_filter: BTreeSet<_> = a.matching(&f).collect();
            let by_index: BTreeSet<_> = a.applicable(ResourceType::Topic, name).collect();
            assert_eq!(by_filter, by_index, "{name}");
        }
    }

    #[test]
    fn delete_by_filter_removes_matches_and_keeps_the_rest() {
        let mut a = filter_fixture();
        let f = AclBindingFilter {
            pattern: PatternFilter::Prefixed,
            ..AclBindingFilter::any()
        };
        let removed = a.remove_matching(&f);
        assert_eq!(removed.len(), 3);
        assert_eq!(a.len(), 4);
        assert!(a.iter().all(|b| b.pattern_type == PatternType::Literal));
        assert!(!a.remove(&removed[0]));
        assert!(!a.add(topic("orders", ALICE, Read, Deny)), "duplicate add");
        for b in removed {
            assert!(a.add(b));
        }
        assert_eq!(a, filter_fixture(), "index shape is independent of history");
        let everything: Vec<_> = a.iter().cloned().collect();
        for b in &everything {
            assert!(a.remove(b));
        }
        assert!(a.is_empty());
        assert_eq!(a, Acls::default());
    }

    #[test]
    fn filter_from_codes_rejects_unknown_and_maps_any_to_none() {
        let f = AclBindingFilter::from_codes(1, None, 1, None, None, 1, 1).unwrap();
        assert_eq!(f, AclBindingFilter::any());
        let f =
            AclBindingFilter::from_codes(2, Some("t"), 2, Some(ALICE), Some("*"), 3, 3).unwrap();
        assert_eq!(f.resource_type, Some(ResourceType::Topic));
        assert_eq!(f.pattern, PatternFilter::Match);
        assert_eq!(f.operation, Some(Read));
        assert_eq!(f.permission, Some(Allow));
        let unknown_pattern = Err("Unknown patternFilter.".to_string());
        let unknown_entry = Err("Unknown entryFilter.".to_string());
        assert_eq!(
            AclBindingFilter::from_codes(0, None, 1, None, None, 1, 1),
            unknown_pattern
        );
        assert_eq!(
            AclBindingFilter::from_codes(1, None, 0, None, None, 1, 1),
            unknown_pattern
        );
        assert_eq!(
            AclBindingFilter::from_codes(8, None, 1, None, None, 1, 1),
            unknown_pattern
        );
        assert_eq!(
            AclBindingFilter::from_codes(1, None, 5, None, None, 1, 1),
            unknown_pattern
        );
        assert_eq!(
            AclBindingFilter::from_codes(1, None, 1, None, None, 0, 1),
            unknown_entry
        );
        assert_eq!(
            AclBindingFilter::from_codes(1, None, 1, None, None, 15, 1),
            unknown_entry
        );
        assert_eq!(
            AclBindingFilter::from_codes(1, None, 1, None, None, 1, 0),
            unknown_entry
        );
        assert_eq!(
            AclBindingFilter::from_codes(1, None, 1, None, None, 1, -1),
            unknown_entry
        );
    }

    #[test]
    fn binding_from_codes_refuses_filter_values() {
        let ok = AclBinding::from_codes(2, "orders", 4, ALICE, "*", 4, 3).unwrap();
        assert_eq!(ok, prefixed_topic("orders", ALICE, Write, Allow));
        let err = |rt, pt, op, perm| {
            AclBinding::from_codes(rt, "orders", pt, ALICE, "*", op, perm).unwrap_err()
        };
        assert_eq!(err(1, 3, 3, 3), "Invalid resourceType ANY");
        assert_eq!(err(0, 3, 3, 3), "Invalid resourceType UNKNOWN");
        assert_eq!(err(2, 2, 3, 3), "Invalid patternType MATCH");
        assert_eq!(err(2, 1, 3, 3), "Invalid patternType ANY");
        assert_eq!(err(2, 3, 1, 3), "Invalid operation ANY");
        assert_eq!(err(2, 3, 0, 3), "Invalid operation UNKNOWN");
        assert_eq!(err(2, 3, 3, 1), "Invalid permissionType ANY");
        assert_eq!(err(2, 3, 3, 9), "Invalid permissionType UNKNOWN");
    }

    #[test]
    fn validate_rejects_bad_cluster_names_empty_names_and_principals() {
        let cluster = |name: &str, principal: &str| {
            acl(
                ResourceType::Cluster,
                name,
                PatternType::Literal,
                principal,
                "*",
                ClusterAction,
                Allow,
            )
        };
        assert_eq!(cluster(CLUSTER_NAME, ALICE).validate(), Ok(()));
        assert_eq!(
            cluster("my-cluster", ALICE).validate(),
            Err("The only valid name for the CLUSTER resource is kafka-cluster".to_string())
        );
        assert!(cluster("*", ALICE).validate().is_err());
        assert_eq!(
            topic("", ALICE, Read, Allow).validate(),
            Err("Invalid empty resource name".to_string())
        );
        let no_type = topic("orders", "alice", Read, Allow)
            .validate()
            .unwrap_err();
        assert!(no_type.contains("principalType:principalName"), "{no_type}");
        assert!(topic("orders", WILDCARD_PRINCIPAL, Read, Allow)
            .validate()
            .is_ok());
        assert!(AclBinding::from_codes(4, "other", 3, ALICE, "*", 9, 3).is_err());
    }

    // KIP-679: the broker lets a producer be idempotent if it may WRITE at least one topic.
    #[test]
    fn authorize_any_grants_idempotent_write_to_writers_of_some_topic() {
        let any_topic = |a: &Acls, config: &AuthorizerConfig, principal: &str| {
            authorize_any(a, config, principal, HOST, Write, ResourceType::Topic)
        };
        let a = acls([
            topic("orders", ALICE, Write, Allow),
            topic("orders", BOB, Read, Allow),
        ]);
        assert!(any_topic(&a, &strict(), ALICE));
        assert!(
            !any_topic(&a, &strict(), BOB),
            "READ does not count for WRITE"
        );
        assert!(!any_topic(&Acls::default(), &strict(), ALICE));
        // A wildcard DENY blocks it even next to literal and prefixed allows.
        let a = acls([
            topic("orders", ALICE, Write, Allow),
            prefixed_topic("pay", ALICE, All, Allow),
            topic("*", ALICE, Write, Deny),
        ]);
        assert!(!any_topic(&a, &strict(), ALICE));
        let a = acls([
            topic("orders", ALICE, Write, Allow),
            topic("*", WILDCARD_PRINCIPAL, All, Deny),
        ]);
        assert!(!any_topic(&a, &strict(), ALICE));
        // An allow survives unless a literal deny on it or a deny on one of its prefixes covers it.
        let a = acls([
            topic("orders", ALICE, Write, Allow),
            topic("orders", ALICE, Write, Deny),
        ]);
        assert!(!any_topic(&a, &strict(), ALICE));
        let a = acls([
            prefixed_topic("ord", ALICE, Write, Allow),
            prefixed_topic("or", ALICE, Write, Deny),
        ]);
        assert!(!any_topic(&a, &strict(), ALICE));
        let a = acls([
            prefixed_topic("or", ALICE, Write, Allow),
            prefixed_topic("ord", ALICE, Write, Deny),
        ]);
        assert!(any_topic(&a, &strict(), ALICE), "topic \"ora\" is writable");
        // A deny for another host does not count; a wildcard allow does.
        let a = acls([
            topic("*", WILDCARD_PRINCIPAL, Write, Allow),
            acl(
                ResourceType::Topic,
                "*",
                PatternType::Literal,
                ALICE,
                "10.9.9.9",
                Write,
                Deny,
            ),
        ]);
        assert!(any_topic(&a, &strict(), ALICE));
        // Super users and the open default pass through Kafka's `hardcode` probe.
        let admin = AuthorizerConfig {
            super_users: [ALICE.to_string()].into(),
            ..strict()
        };
        let a = acls([topic("*", ALICE, Write, Deny)]);
        assert!(any_topic(&a, &admin, ALICE));
        let open = AuthorizerConfig {
            allow_everyone_if_no_acl_found: true,
            ..strict()
        };
        assert!(any_topic(&Acls::default(), &open, ALICE));
    }

    #[test]
    fn strings_the_metadata_log_cannot_hold_are_refused() {
        let long = "t".repeat(MAX_ACL_STRING_BYTES + 1);
        let binding = acl(ResourceType::Topic, &long, PatternType::Literal, ALICE, "*", Operation::Read, Permission::Allow);
        assert!(binding.validate().unwrap_err().contains("longer than"));
        assert!(AclBindingFilter::from_codes(2, Some(&long), 3, None, None, 1, 1).unwrap_err().contains("longer than"));
        let fits = acl(ResourceType::Topic, &long[1..], PatternType::Literal, ALICE, "*", Operation::Read, Permission::Allow);
        assert_eq!(fits.validate(), Ok(()));
    }

    #[test]
    fn codes_names_and_parsing_round_trip() {
        for t in ResourceType::ALL_VALUES {
            assert_eq!(ResourceType::from_code(t.code()), Some(*t));
            assert_eq!(ResourceType::parse(t.name()), Some(*t));
        }
        for o in Operation::ALL_VALUES {
            assert_eq!(Operation::from_code(o.code()), Some(*o));
            assert_eq!(Operation::parse(&o.name().to_lowercase()), Some(*o));
        }
        for p in Permission::ALL_VALUES {
            assert_eq!(Permission::from_code(p.code()), Some(*p));
        }
        assert_eq!(ResourceType::Topic.code(), 2);
        assert_eq!(ResourceType::User.code(), 7);
        assert_eq!(Operation::DescribeTokens.code(), 14);
        assert_eq!(PatternType::Prefixed.code(), 4);
        assert_eq!(Permission::Allow.code(), 3);
        assert_eq!(ResourceType::from_code(1), None);
        assert_eq!(Operation::from_code(1), None);
        assert_eq!(
            ResourceType::parse("TransactionalId"),
            Some(ResourceType::TransactionalId)
        );
        assert_eq!(Operation::parse("IdempotentWrite"), Some(IdempotentWrite));
        assert_eq!(PatternType::parse("prefixed"), Some(PatternType::Prefixed));
        assert_eq!(PatternFilter::parse("match"), Some(PatternFilter::Match));
        assert_eq!(Operation::parse("any"), None);
        assert_eq!(
            topic("orders", ALICE, Read, Allow).to_string(),
            "(pattern=ResourcePattern(resourceType=TOPIC, name=orders, patternType=LITERAL), \
             entry=(principal=User:alice, host=*, operation=READ, permissionType=ALLOW))"
        );
    }
}
