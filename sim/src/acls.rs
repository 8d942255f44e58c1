//! The `acls` scenario's workload and checks: ACL clients create and delete bindings drawn from
//! a small universe through the metadata log, and after healing the nodes' ACLs must agree with
//! each other, with every authorization probe, and with what the controller acknowledged.
//!
//! The history model treats every request that was not acknowledged as "may or may not have
//! happened, at any time after it was sent": a timeout, a node's forward that timed out, and a
//! refusal alike (a controller that loses its leadership after proposing answers NOT_CONTROLLER
//! although a later leader may commit the entry), and so are the copies of forwarded requests
//! the network duplicated (a copy may land after the original's answer). An acknowledged
//! request committed somewhere between its send and its answer. Only what no such ordering can
//! explain is a violation, so the check cannot fail a correct cluster.

use std::collections::BTreeSet;

use odradek_core::acl::{self, AclBinding, AclBindingFilter, Acls, AuthorizerConfig, Operation, PatternFilter, PatternType, Permission, ResourceType};
use odradek_core::controller::Response;
use odradek_core::controller_rpc::ControllerRequest;
use odradek_core::ids::NodeId;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

const PRINCIPALS: [&str; 3] = ["User:alice", "User:bob", acl::WILDCARD_PRINCIPAL];
const HOSTS: [&str; 2] = [acl::WILDCARD_HOST, "10.0.0.1"];
/// Topic patterns: a literal name, a PREFIXED pattern covering it and other names, the
/// wildcard, and the scenario's own topic.
const RESOURCES: [(&str, PatternType); 4] =
    [("orders", PatternType::Literal), ("ord", PatternType::Prefixed), (acl::WILDCARD_RESOURCE, PatternType::Literal), ("t", PatternType::Literal)];
/// ALL, operations that imply DESCRIBE (READ, WRITE, ALTER) or DESCRIBE_CONFIGS
/// (ALTER_CONFIGS) when allowed, and the implied ones themselves.
const OPERATIONS: [Operation; 7] = [
    Operation::All,
    Operation::Read,
    Operation::Write,
    Operation::Alter,
    Operation::Describe,
    Operation::AlterConfigs,
    Operation::DescribeConfigs,
];

/// What one request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AclChange {
    Create(Vec<AclBinding>),
    Delete(Vec<AclBindingFilter>),
}

impl AclChange {
    pub fn request(&self) -> ControllerRequest {
        match self {
            AclChange::Create(b) => ControllerRequest::CreateAcls(b.clone()),
            AclChange::Delete(f) => ControllerRequest::DeleteAcls(f.clone()),
        }
    }

    /// The change a forwarded controller request carries, if it is an ACL one.
    pub fn of_request(request: &ControllerRequest) -> Option<AclChange> {
        match request {
            ControllerRequest::CreateAcls(b) => Some(AclChange::Create(b.clone())),
            ControllerRequest::DeleteAcls(f) => Some(AclChange::Delete(f.clone())),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AclOutcome {
    /// Sent, no answer yet.
    Pending,
    /// Answered without error; for a deletion, every binding its filters removed.
    Acked { deleted: BTreeSet<AclBinding> },
    /// Answered with an error (modelled as unknown, see the module doc).
    Refused(String),
    /// No answer (timeout, the node's forward timed out), or a network copy of a forward.
    Unknown(&'static str),
}

#[derive(Debug, Clone)]
pub struct AclOp {
    pub client: NodeId,
    pub change: AclChange,
    /// Simulated time of the send and, if acknowledged, of the answer.
    pub sent: i64,
    pub answered: Option<i64>,
    pub outcome: AclOutcome,
}

impl AclOp {
    /// The latest time it may have taken effect.
    fn latest(&self) -> i64 {
        match (&self.outcome, self.answered) {
            (AclOutcome::Acked { .. }, Some(at)) => at,
            _ => i64::MAX,
        }
    }

    /// Whether it may have created `b`.
    fn may_create(&self, b: &AclBinding) -> bool {
        matches!(&self.change, AclChange::Create(bindings) if bindings.contains(b))
    }

    /// Whether it may have removed `b`: an acknowledged deletion says what it removed.
    fn may_remove(&self, b: &AclBinding) -> bool {
        match (&self.change, &self.outcome) {
            (AclChange::Delete(_), AclOutcome::Acked { deleted }) => deleted.contains(b),
            (AclChange::Delete(filters), _) => filters.iter().any(|f| f.matches(b)),
            (AclChange::Create(_), _) => false,
        }
    }
}

/// The outcome an answer gives; an answer of the wrong kind is a driver bug.
pub fn outcome_of(response: &Response) -> AclOutcome {
    let errors: Vec<String> = match response {
        Response::CreateAcls(results) => results.iter().filter_map(|r| r.error.as_ref()).map(|e| format!("{:?}", e.code())).collect(),
        Response::DeleteAcls(results) => results.iter().filter_map(|r| r.error.as_ref()).map(|e| format!("{:?}", e.code())).collect(),
        other => panic!("an ACL request answered with {other:?}"),
    };
    if let Some(first) = errors.into_iter().next() {
        return AclOutcome::Refused(first);
    }
    let deleted = match response {
        Response::DeleteAcls(results) => results.iter().flat_map(|r| r.deleted.iter().cloned()).collect(),
        _ => BTreeSet::new(),
    };
    AclOutcome::Acked { deleted }
}

fn binding(rng: &mut ChaCha8Rng) -> AclBinding {
    let (name, pattern_type) = RESOURCES[rng.gen_range(0..RESOURCES.len())];
    AclBinding {
        resource_type: ResourceType::Topic,
        resource_name: name.to_string(),
        pattern_type,
        principal: PRINCIPALS[rng.gen_range(0..PRINCIPALS.len())].to_string(),
        host: HOSTS[rng.gen_range(0..HOSTS.len())].to_string(),
        operation: OPERATIONS[rng.gen_range(0..OPERATIONS.len())],
        permission: if rng.gen_bool(0.6) { Permission::Allow } else { Permission::Deny },
    }
}

/// The next request of a client: creations of 1–3 bindings (60 %), else deletions of 1–2
/// filters, most (72 %) of one binding sent earlier, the rest broader: a principal (5 %), a
/// resource (10 %), a MATCH on a topic name (7 %), an operation and permission (5 %), every
/// ACL (1 %). Broad filters are kept rare: an unanswered one may have removed anything it
/// matches at any later time, which leaves the history check little it can pin down.
pub fn draw_change(rng: &mut ChaCha8Rng, created: &[AclBinding]) -> AclChange {
    if created.is_empty() || rng.gen_bool(0.6) {
        let n = rng.gen_range(1..=3);
        return AclChange::Create((0..n).map(|_| binding(rng)).collect());
    }
    let n = rng.gen_range(1..=2);
    let filters = (0..n)
        .map(|_| {
            let topic = Some(ResourceType::Topic);
            match rng.gen_range(0..100) {
                0..=71 => AclBindingFilter::exact(&created[rng.gen_range(0..created.len())]),
                72..=76 => AclBindingFilter {
                    principal: Some(PRINCIPALS[rng.gen_range(0..PRINCIPALS.len())].to_string()),
                    ..AclBindingFilter::any()
                },
                77..=86 => {
                    let (name, pattern_type) = RESOURCES[rng.gen_range(0..RESOURCES.len())];
                    let pattern = if rng.gen_bool(0.5) { PatternFilter::Any } else { pattern_type.into() };
                    AclBindingFilter { resource_type: topic, resource_name: Some(name.to_string()), pattern, ..AclBindingFilter::any() }
                }
                87..=93 => {
                    let name = ["orders", "order-x", "t"][rng.gen_range(0..3)];
                    AclBindingFilter { resource_type: topic, resource_name: Some(name.to_string()), pattern: PatternFilter::Match, ..AclBindingFilter::any() }
                }
                94..=98 => AclBindingFilter {
                    operation: Some(OPERATIONS[rng.gen_range(0..OPERATIONS.len())]),
                    permission: Some(if rng.gen_bool(0.5) { Permission::Allow } else { Permission::Deny }),
                    ..AclBindingFilter::any()
                },
                _ => AclBindingFilter::any(),
            }
        })
        .collect();
    AclChange::Delete(filters)
}

/// Checks 1 and 3 over the nodes' ACLs: the same bindings in the same order everywhere, and
/// the same decision for every probe (principals with and without their own ACLs, two hosts,
/// operations granted directly, through ALL or by implication, topic names the literal, the
/// prefix and only the wildcard cover), under a deny-by-default authorizer.
pub fn check_nodes(nodes: &[(NodeId, &Acls)]) -> Result<(), String> {
    let Some(&(first, reference)) = nodes.first() else { return Ok(()) };
    let listed: Vec<&AclBinding> = reference.iter().collect();
    for &(id, acls) in &nodes[1..] {
        let other: Vec<&AclBinding> = acls.iter().collect();
        if other != listed {
            let at = listed.iter().zip(&other).position(|(a, b)| a != b).unwrap_or(listed.len().min(other.len()));
            return Err(format!(
                "node {id} holds {} ACLs, node {first} {}; first difference at position {at}: {} vs {}",
                other.len(),
                listed.len(),
                other.get(at).map_or("(none)".to_string(), |b| b.to_string()),
                listed.get(at).map_or("(none)".to_string(), |b| b.to_string()),
            ));
        }
    }
    let config = AuthorizerConfig::default();
    for principal in ["User:alice", "User:bob", "User:carol"] {
        for host in ["10.0.0.1", "10.0.0.2"] {
            for operation in [
                Operation::Read,
                Operation::Write,
                Operation::Describe,
                Operation::Alter,
                Operation::DescribeConfigs,
                Operation::AlterConfigs,
                Operation::Create,
            ] {
                for topic in ["orders", "ord", "order-x", "t", "other"] {
                    let decide = |acls: &Acls| acl::authorize(acls, &config, principal, host, operation, ResourceType::Topic, topic);
                    let expected = decide(reference);
                    for &(id, acls) in &nodes[1..] {
                        if decide(acls) != expected {
                            return Err(format!(
                                "node {id} {} {principal} from {host} {operation} on topic {topic}, node {first} {}",
                                if expected { "denies" } else { "allows" },
                                if expected { "allows" } else { "denies" },
                            ));
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

/// Check 2: the final ACLs against the history. A binding an acknowledged creation put in
/// place must be there unless a deletion that may have removed it may have taken effect after
/// that creation did; a binding an acknowledged deletion removed must be gone unless a creation
/// of it may have taken effect after that deletion did; and no binding may be there that no
/// request ever asked for.
///
/// Returns how many bindings the history pinned: ones that must be present, and ones that
/// must be absent (no ordering of the unknown requests could change them), so that a report
/// shows the check is not vacuous.
pub fn check_history(ops: &[AclOp], acls: &Acls) -> Result<(usize, usize), String> {
    let present: BTreeSet<&AclBinding> = acls.iter().collect();
    let describe = |k: usize, op: &AclOp| {
        let what = match &op.change {
            AclChange::Create(b) => format!("a creation of {} binding(s)", b.len()),
            AclChange::Delete(f) => format!("a deletion with {} filter(s)", f.len()),
        };
        format!("request {k}, {what} by client {} sent at {} ms, acknowledged at {} ms", op.client, op.sent, op.answered.unwrap_or(-1))
    };
    for b in &present {
        if !ops.iter().any(|op| op.may_create(b)) {
            return Err(format!("{b} is present but no request created it"));
        }
    }
    let (mut must_be_present, mut must_be_absent) = (BTreeSet::new(), BTreeSet::new());
    for (k, op) in ops.iter().enumerate() {
        match (&op.change, &op.outcome) {
            (AclChange::Create(bindings), AclOutcome::Acked { .. }) => {
                for b in bindings {
                    // The creation took effect at or after its send; a removal after that must
                    // be possible.
                    if ops.iter().any(|d| d.may_remove(b) && d.latest() >= op.sent) {
                        continue;
                    }
                    if !present.contains(b) {
                        return Err(format!("{b} is missing although acknowledged created ({}) and no deletion may have removed it since", describe(k, op)));
                    }
                    must_be_present.insert(b);
                }
            }
            (AclChange::Delete(_), AclOutcome::Acked { deleted }) => {
                for b in deleted {
                    if ops.iter().any(|c| c.may_create(b) && c.latest() >= op.sent) {
                        continue;
                    }
                    if present.contains(b) {
                        return Err(format!("{b} is present although an acknowledged deletion removed it ({}) and no creation may have come after", describe(k, op)));
                    }
                    must_be_absent.insert(b);
                }
            }
            _ => {}
        }
    }
    Ok((must_be_present.len(), must_be_absent.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(principal: &str, operation: Operation) -> AclBinding {
        AclBinding {
            resource_type: ResourceType::Topic,
            resource_name: "orders".into(),
            pattern_type: PatternType::Literal,
            principal: principal.into(),
            host: "*".into(),
            operation,
            permission: Permission::Allow,
        }
    }

    fn op(change: AclChange, sent: i64, outcome: AclOutcome, answered: Option<i64>) -> AclOp {
        AclOp { client: NodeId(190), change, sent, answered, outcome }
    }

    fn acked() -> AclOutcome {
        AclOutcome::Acked { deleted: BTreeSet::new() }
    }

    fn acls(bindings: &[AclBinding]) -> Acls {
        let mut a = Acls::default();
        for x in bindings {
            a.add(x.clone());
        }
        a
    }

    #[test]
    fn an_acknowledged_creation_must_survive_unless_a_deletion_may_follow_it() {
        let alice = b("User:alice", Operation::Read);
        let create = op(AclChange::Create(vec![alice.clone()]), 100, acked(), Some(150));
        assert!(check_history(&[create.clone()], &acls(&[])).is_err());
        assert!(check_history(&[create.clone()], &acls(&[alice.clone()])).is_ok());
        // A deletion acknowledged before the creation was sent cannot explain the absence...
        let early = op(AclChange::Delete(vec![AclBindingFilter::exact(&alice)]), 10, AclOutcome::Acked { deleted: [alice.clone()].into() }, Some(90));
        assert!(check_history(&[early, create.clone()], &acls(&[])).is_err());
        // ...an unknown one sent before it can (it may have landed late), and so can a refused one.
        let unknown = op(AclChange::Delete(vec![AclBindingFilter::any()]), 10, AclOutcome::Unknown("timeout"), None);
        assert!(check_history(&[unknown, create.clone()], &acls(&[])).is_ok());
        let refused = op(AclChange::Delete(vec![AclBindingFilter::any()]), 10, AclOutcome::Refused("NotController".into()), Some(20));
        assert!(check_history(&[refused, create.clone()], &acls(&[])).is_ok());
        // An acknowledged deletion that did not remove it explains nothing.
        let missed = op(AclChange::Delete(vec![AclBindingFilter::exact(&alice)]), 200, acked(), Some(250));
        assert!(check_history(&[create, missed], &acls(&[])).is_err());
    }

    #[test]
    fn an_acknowledged_deletion_must_hold_unless_a_creation_may_follow_it() {
        let alice = b("User:alice", Operation::Read);
        let create = op(AclChange::Create(vec![alice.clone()]), 100, acked(), Some(150));
        let delete = op(AclChange::Delete(vec![AclBindingFilter::any()]), 200, AclOutcome::Acked { deleted: [alice.clone()].into() }, Some(250));
        assert!(check_history(&[create.clone(), delete.clone()], &acls(&[alice.clone()])).is_err());
        assert!(check_history(&[create.clone(), delete.clone()], &acls(&[])).is_ok());
        // A network copy of the creation may land after the deletion.
        let copy = op(AclChange::Create(vec![alice.clone()]), 100, AclOutcome::Unknown("duplicate"), None);
        assert!(check_history(&[create, delete, copy], &acls(&[alice.clone()])).is_ok());
        // Nobody asked for bob's.
        let bob = b("User:bob", Operation::Write);
        assert!(check_history(&[], &acls(&[bob])).is_err());
    }

    #[test]
    fn nodes_must_agree_on_bindings_and_decisions() {
        let alice = b("User:alice", Operation::Read);
        let (one, two) = (acls(&[alice.clone()]), acls(&[]));
        assert!(check_nodes(&[(NodeId(1), &one), (NodeId(2), &one)]).is_ok());
        let err = check_nodes(&[(NodeId(1), &one), (NodeId(2), &two)]).expect_err("they differ");
        assert!(err.contains("node 2 holds 0 ACLs"), "{err}");
    }
}
