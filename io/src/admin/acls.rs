//! `odradek acls`: ACLs (KIP-140), after Kafka's `kafka-acls.sh --add|--list|--remove`.
//!
//! A client of a running broker through CreateAcls, DescribeAcls and DeleteAcls, on the same
//! blocking connections as `odradek group`. The options are `kafka-acls.sh`'s: principals with
//! `--allow-principal`/`--deny-principal` (and their hosts, `*` by default), `--operation`
//! (repeatable; `All` when left out of `add`), the resources with `--topic`, `--group`,
//! `--cluster` and `--transactional-id`, and `--resource-pattern-type`. `--producer` and
//! `--consumer` add the ACLs those clients need, as `kafka-acls.sh` does.
//!
//! One deliberate difference: `remove` with a principal but no `--operation` or host removes
//! that principal's ACLs for any operation and host, where `kafka-acls.sh` would look only for
//! `All` from `*`.
//!
//! Exit status, for scripts: 0 done; 1 failed (unreachable broker, or the broker refused);
//! 2 bad arguments (as clap's own usage errors).

use std::collections::BTreeSet;
use std::io::Write;

use clap::{Args, Parser, Subcommand, ValueEnum};
use odradek_core::acl::{
    AclBinding, AclBindingFilter, Operation, PatternFilter, PatternType, Permission, ResourceType, CLUSTER_NAME, WILDCARD_HOST,
};

use super::messages;
use super::{AdminError, ConnectArgs, Table};

pub const EXIT_FAILURE: i32 = 1;
pub const EXIT_USAGE: i32 = 2;

/// ACLs: add them, list them, remove them.
#[derive(Parser, Debug)]
pub struct AclsArgs {
    #[command(subcommand)]
    command: AclsCommand,
}

#[derive(Subcommand, Debug)]
enum AclsCommand {
    /// Add ACLs: every principal, host and operation given, on every resource given.
    Add(AddArgs),
    /// List ACLs: those on the resources given (every ACL without one), one line each.
    List(ListArgs),
    /// Remove ACLs: those on the resources given that match the principals, hosts and
    /// operations given (every ACL on the resources without a principal).
    Remove(RemoveArgs),
}

#[derive(Args, Debug, Default)]
struct EntryArgs {
    /// A principal to allow, `Type:name` (e.g. `User:alice`, `User:*`); repeatable.
    #[arg(long = "allow-principal", value_name = "TYPE:NAME")]
    allow_principals: Vec<String>,
    /// A principal to deny, `Type:name`; repeatable.
    #[arg(long = "deny-principal", value_name = "TYPE:NAME")]
    deny_principals: Vec<String>,
    /// A host the allowed principals connect from (default `*`); repeatable.
    #[arg(long = "allow-host", value_name = "HOST")]
    allow_hosts: Vec<String>,
    /// A host the denied principals connect from (default `*`); repeatable.
    #[arg(long = "deny-host", value_name = "HOST")]
    deny_hosts: Vec<String>,
    /// An operation, e.g. Read, Write, Describe, IdempotentWrite, All; repeatable.
    #[arg(long = "operation", value_name = "OPERATION", value_parser = parse_operation)]
    operations: Vec<Operation>,
}

#[derive(Args, Debug, Default)]
struct ResourceArgs {
    /// A topic; repeatable.
    #[arg(long = "topic", value_name = "TOPIC")]
    topics: Vec<String>,
    /// A consumer group; repeatable.
    #[arg(long = "group", value_name = "GROUP")]
    groups: Vec<String>,
    /// The cluster (the resource named `kafka-cluster`).
    #[arg(long)]
    cluster: bool,
    /// A transactional id; repeatable.
    #[arg(long = "transactional-id", value_name = "ID")]
    transactional_ids: Vec<String>,
}

#[derive(Args, Debug)]
struct AddArgs {
    #[command(flatten)]
    entry: EntryArgs,
    #[command(flatten)]
    resources: ResourceArgs,
    /// literal or prefixed: whether a resource name is the name itself or a prefix of names.
    #[arg(long, value_name = "TYPE", value_parser = parse_pattern_type, default_value = "literal")]
    resource_pattern_type: PatternType,
    /// What a producer needs: Write, Describe and Create on the topics, Write and Describe on
    /// the transactional ids, and with `--idempotent` IdempotentWrite on the cluster.
    #[arg(long, conflicts_with = "operations")]
    producer: bool,
    /// What a consumer needs: Read and Describe on the topics, Read on the groups.
    #[arg(long, conflicts_with = "operations")]
    consumer: bool,
    /// With `--producer`: IdempotentWrite on the cluster too.
    #[arg(long, requires = "producer")]
    idempotent: bool,
    #[command(flatten)]
    connect: ConnectArgs,
}

#[derive(Args, Debug)]
struct ListArgs {
    #[command(flatten)]
    resources: ResourceArgs,
    /// any, match, literal or prefixed (default: literal with a resource, any without).
    #[arg(long, value_name = "TYPE", value_parser = parse_pattern_filter)]
    resource_pattern_type: Option<PatternFilter>,
    /// Only the ACLs of this principal, `Type:name`.
    #[arg(long, value_name = "TYPE:NAME")]
    principal: Option<String>,
    /// How to print the ACLs.
    #[arg(long, value_enum, default_value_t = Output::Human)]
    output: Output,
    #[command(flatten)]
    connect: ConnectArgs,
}

#[derive(Args, Debug)]
struct RemoveArgs {
    #[command(flatten)]
    entry: EntryArgs,
    #[command(flatten)]
    resources: ResourceArgs,
    /// any, match, literal or prefixed.
    #[arg(long, value_name = "TYPE", value_parser = parse_pattern_filter, default_value = "literal")]
    resource_pattern_type: PatternFilter,
    #[command(flatten)]
    connect: ConnectArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    /// One line per ACL, under a header.
    Human,
    /// A JSON array of ACL objects.
    Json,
}

fn parse_operation(text: &str) -> Result<Operation, String> {
    Operation::parse(text).ok_or_else(|| {
        let names: Vec<&str> = Operation::ALL_VALUES.iter().map(|o| o.name()).collect();
        format!("{text:?} is not one of {}", names.join(", "))
    })
}

fn parse_pattern_type(text: &str) -> Result<PatternType, String> {
    PatternType::parse(text).ok_or_else(|| format!("{text:?} is not literal or prefixed"))
}

fn parse_pattern_filter(text: &str) -> Result<PatternFilter, String> {
    PatternFilter::parse(text).ok_or_else(|| format!("{text:?} is not any, match, literal or prefixed"))
}

/// Runs an `acls` command; returns the process exit status.
pub fn run(args: AclsArgs) -> i32 {
    super::finish(execute(args), |e| match e {
        AdminError::Usage(_) => EXIT_USAGE,
        _ => EXIT_FAILURE,
    })
}

fn execute(args: AclsArgs) -> Result<String, AdminError> {
    match args.command {
        AclsCommand::Add(args) => add(&args),
        AclsCommand::List(args) => list(&args),
        AclsCommand::Remove(args) => remove(&args),
    }
}

impl ResourceArgs {
    /// Each resource given, as (type, name), in option order.
    fn resources(&self) -> Vec<(ResourceType, String)> {
        let named = |t: ResourceType, names: &[String]| names.iter().map(move |n| (t, n.clone())).collect::<Vec<_>>();
        let mut resources = named(ResourceType::Topic, &self.topics);
        resources.extend(named(ResourceType::Group, &self.groups));
        if self.cluster {
            resources.push((ResourceType::Cluster, CLUSTER_NAME.to_owned()));
        }
        resources.extend(named(ResourceType::TransactionalId, &self.transactional_ids));
        resources
    }
}

impl EntryArgs {
    /// Each (principal, permission, hosts) given; an empty host list when none was given.
    fn principals(&self) -> Vec<(&str, Permission, &[String])> {
        let allowed = self.allow_principals.iter().map(|p| (p.as_str(), Permission::Allow, &self.allow_hosts[..]));
        allowed.chain(self.deny_principals.iter().map(|p| (p.as_str(), Permission::Deny, &self.deny_hosts[..]))).collect()
    }
}

/// The operations `kafka-acls.sh` accepts on each resource type (its
/// `ResourceTypeToValidOperations`): an ACL for any other could never be consulted.
fn valid_operations(resource_type: ResourceType) -> &'static [Operation] {
    use Operation::*;
    match resource_type {
        ResourceType::Topic => &[Read, Write, Create, Describe, Delete, Alter, DescribeConfigs, AlterConfigs, All],
        ResourceType::Group => &[Read, Describe, Delete, All],
        ResourceType::Cluster => &[Create, ClusterAction, DescribeConfigs, AlterConfigs, IdempotentWrite, Alter, Describe, All],
        ResourceType::TransactionalId => &[Describe, Write, All],
        ResourceType::DelegationToken => &[Describe, All],
        ResourceType::User => &[CreateTokens, DescribeTokens, All],
    }
}

/// The bindings `add` creates, checked here so that a typo is a usage error, not a half-made
/// set of ACLs.
fn bindings_to_add(args: &AddArgs) -> Result<Vec<AclBinding>, AdminError> {
    use Operation::*;
    let principals = args.entry.principals();
    if principals.is_empty() {
        return Err(AdminError::Usage("give at least one --allow-principal or --deny-principal".into()));
    }
    let resources = args.resources.resources();
    if resources.is_empty() {
        return Err(AdminError::Usage("give a resource: --topic, --group, --cluster or --transactional-id".into()));
    }
    // (resource, operations) pairs.
    let mut wanted: Vec<((ResourceType, String), Vec<Operation>)> = Vec::new();
    if args.producer || args.consumer {
        let has = |t: ResourceType| resources.iter().any(|(rt, _)| *rt == t);
        if !has(ResourceType::Topic) || (args.consumer && !has(ResourceType::Group)) {
            let need = if args.consumer { "--consumer needs --topic and --group" } else { "--producer needs --topic" };
            return Err(AdminError::Usage(need.into()));
        }
        for resource in &resources {
            let mut ops = Vec::new();
            match resource.0 {
                ResourceType::Topic if args.producer => ops.extend([Write, Describe, Create]),
                ResourceType::TransactionalId if args.producer => ops.extend([Write, Describe]),
                _ => {}
            }
            match resource.0 {
                ResourceType::Topic if args.consumer => ops.extend([Read, Describe]),
                ResourceType::Group if args.consumer => ops.push(Read),
                _ => {}
            }
            ops.dedup();
            if !ops.is_empty() {
                wanted.push((resource.clone(), ops));
            }
        }
        if args.idempotent {
            wanted.push(((ResourceType::Cluster, CLUSTER_NAME.to_owned()), vec![IdempotentWrite]));
        }
    } else {
        let ops = if args.entry.operations.is_empty() { vec![All] } else { args.entry.operations.clone() };
        for resource in &resources {
            let valid = valid_operations(resource.0);
            if let Some(op) = ops.iter().find(|op| !valid.contains(op)) {
                let names: Vec<&str> = valid.iter().map(|o| o.name()).collect();
                return Err(AdminError::Usage(format!(
                    "{op} is not an operation on {}: it takes {}",
                    resource.0,
                    names.join(", ")
                )));
            }
            wanted.push((resource.clone(), ops.clone()));
        }
    }
    let mut bindings = Vec::new();
    let mut seen = BTreeSet::new();
    for ((resource_type, resource_name), ops) in wanted {
        // The cluster has one name and no prefixes.
        let pattern_type = if resource_type == ResourceType::Cluster { PatternType::Literal } else { args.resource_pattern_type };
        for (principal, permission, hosts) in &principals {
            let default_host = [WILDCARD_HOST.to_owned()];
            let hosts = if hosts.is_empty() { &default_host[..] } else { hosts };
            for host in hosts {
                for operation in &ops {
                    let binding = AclBinding {
                        resource_type,
                        resource_name: resource_name.clone(),
                        pattern_type,
                        principal: (*principal).to_owned(),
                        host: host.clone(),
                        operation: *operation,
                        permission: *permission,
                    };
                    binding.validate().map_err(AdminError::Usage)?;
                    if seen.insert(binding.clone()) {
                        bindings.push(binding);
                    }
                }
            }
        }
    }
    Ok(bindings)
}

fn add(args: &AddArgs) -> Result<String, AdminError> {
    let bindings = bindings_to_add(args)?;
    let mut cluster = args.connect.cluster();
    let connection = cluster.any_broker()?;
    let addr = connection.addr().to_owned();
    let (_, response) = connection.call(|v| messages::create_acls_request(&bindings, v))?;
    let context = || format!("CreateAcls at {addr}");
    let results = messages::created_acls(&response, bindings.len()).map_err(|error| AdminError::Answer { context: context(), error })?;
    let mut out = String::new();
    let mut failures = Vec::new();
    for (binding, result) in bindings.iter().zip(results) {
        match result {
            Ok(()) => out.push_str(&format!("Added {binding}\n")),
            Err(error) => failures.push(format!("{binding}: {error}")),
        }
    }
    if !failures.is_empty() {
        // What was added stays added; say so before the failure.
        let _ = std::io::stdout().write_all(out.as_bytes());
        return Err(AdminError::Refused(format!("{} refused {}", context(), failures.join("; "))));
    }
    Ok(out)
}

/// The DescribeAcls filters of `list`: one per resource, or one for every ACL.
fn list_filters(args: &ListArgs) -> Vec<AclBindingFilter> {
    let resources = args.resources.resources();
    let entry = AclBindingFilter { principal: args.principal.clone(), ..AclBindingFilter::any() };
    if resources.is_empty() {
        return vec![AclBindingFilter { pattern: args.resource_pattern_type.unwrap_or(PatternFilter::Any), ..entry }];
    }
    resources
        .into_iter()
        .map(|(resource_type, name)| AclBindingFilter {
            resource_type: Some(resource_type),
            resource_name: Some(name),
            pattern: args.resource_pattern_type.unwrap_or(PatternFilter::Literal),
            ..entry.clone()
        })
        .collect()
}

fn list(args: &ListArgs) -> Result<String, AdminError> {
    let mut cluster = args.connect.cluster();
    let connection = cluster.any_broker()?;
    let addr = connection.addr().to_owned();
    let mut bindings = BTreeSet::new();
    for filter in list_filters(args) {
        let (_, response) = connection.call(|v| messages::describe_acls_request(&filter, v))?;
        let described = messages::described_acls(&response)
            .map_err(|error| AdminError::Answer { context: format!("DescribeAcls at {addr}"), error })?;
        bindings.extend(described);
    }
    Ok(match args.output {
        Output::Human => render_acls(&bindings),
        Output::Json => render_json(&bindings),
    })
}

fn render_acls(bindings: &BTreeSet<AclBinding>) -> String {
    let mut table = Table::new(["RESOURCE_TYPE", "NAME", "PATTERN_TYPE", "PRINCIPAL", "HOST", "OPERATION", "PERMISSION"]);
    for b in bindings {
        table.push([
            b.resource_type.name().to_owned(),
            b.resource_name.clone(),
            b.pattern_type.name().to_owned(),
            b.principal.clone(),
            b.host.clone(),
            b.operation.name().to_owned(),
            b.permission.name().to_owned(),
        ]);
    }
    table.render()
}

fn render_json(bindings: &BTreeSet<AclBinding>) -> String {
    let acls: Vec<serde_json::Value> = bindings
        .iter()
        .map(|b| {
            serde_json::json!({
                "resource_type": b.resource_type.name(),
                "resource_name": b.resource_name,
                "pattern_type": b.pattern_type.name(),
                "principal": b.principal,
                "host": b.host,
                "operation": b.operation.name(),
                "permission": b.permission.name(),
            })
        })
        .collect();
    format!("{}\n", serde_json::Value::Array(acls))
}

/// The DeleteAcls filters of `remove`: per resource, one per principal × host × operation
/// given, what was left out matching anything.
fn remove_filters(args: &RemoveArgs) -> Result<Vec<AclBindingFilter>, AdminError> {
    let resources = args.resources.resources();
    if resources.is_empty() {
        return Err(AdminError::Usage("give a resource: --topic, --group, --cluster or --transactional-id".into()));
    }
    let principals = args.entry.principals();
    let ops: Vec<Option<Operation>> =
        if args.entry.operations.is_empty() { vec![None] } else { args.entry.operations.iter().copied().map(Some).collect() };
    let mut filters = Vec::new();
    for (resource_type, name) in resources {
        let on_resource = AclBindingFilter {
            resource_type: Some(resource_type),
            resource_name: Some(name),
            pattern: args.resource_pattern_type,
            ..AclBindingFilter::any()
        };
        if principals.is_empty() {
            filters.push(on_resource);
            continue;
        }
        for (principal, permission, hosts) in &principals {
            let hosts: Vec<Option<String>> = if hosts.is_empty() { vec![None] } else { hosts.iter().cloned().map(Some).collect() };
            for host in &hosts {
                for operation in &ops {
                    filters.push(AclBindingFilter {
                        principal: Some((*principal).to_owned()),
                        host: host.clone(),
                        operation: *operation,
                        permission: Some(*permission),
                        ..on_resource.clone()
                    });
                }
            }
        }
    }
    Ok(filters)
}

fn remove(args: &RemoveArgs) -> Result<String, AdminError> {
    let filters = remove_filters(args)?;
    let mut cluster = args.connect.cluster();
    let connection = cluster.any_broker()?;
    let addr = connection.addr().to_owned();
    let (_, response) = connection.call(|v| messages::delete_acls_request(&filters, v))?;
    let context = format!("DeleteAcls at {addr}");
    let results = messages::deleted_acls(&response, filters.len())
        .map_err(|error| AdminError::Answer { context: context.clone(), error })?;
    let mut removed = BTreeSet::new();
    for result in results {
        removed.extend(result.map_err(|error| AdminError::Answer { context: context.clone(), error })?);
    }
    if removed.is_empty() {
        return Ok("No ACL matched.\n".to_owned());
    }
    Ok(removed.iter().map(|b| format!("Removed {b}\n")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<AclsArgs, clap::Error> {
        AclsArgs::try_parse_from(std::iter::once("acls").chain(args.iter().copied()))
    }

    fn add_args(args: &[&str]) -> AddArgs {
        match parse(&[&["add"], args].concat()).unwrap().command {
            AclsCommand::Add(add) => add,
            other => panic!("{other:?}"),
        }
    }

    fn short(b: &AclBinding) -> String {
        format!("{}:{}:{}:{}@{}:{}:{}", b.resource_type, b.pattern_type, b.resource_name, b.principal, b.host, b.operation, b.permission)
    }

    #[test]
    fn add_builds_principal_host_operation_resource_products() {
        let add = add_args(&[
            "--allow-principal", "User:alice", "--deny-principal", "User:bob", "--deny-host", "10.0.0.1",
            "--operation", "Read", "--operation", "describe", "--topic", "orders", "--resource-pattern-type", "prefixed",
        ]);
        let built: Vec<String> = bindings_to_add(&add).unwrap().iter().map(short).collect();
        assert_eq!(
            built,
            [
                "TOPIC:PREFIXED:orders:User:alice@*:READ:ALLOW",
                "TOPIC:PREFIXED:orders:User:alice@*:DESCRIBE:ALLOW",
                "TOPIC:PREFIXED:orders:User:bob@10.0.0.1:READ:DENY",
                "TOPIC:PREFIXED:orders:User:bob@10.0.0.1:DESCRIBE:DENY",
            ]
        );
        // No operation is All; the cluster is always literal.
        let built: Vec<String> =
            bindings_to_add(&add_args(&["--allow-principal", "User:*", "--cluster", "--resource-pattern-type", "prefixed"]))
                .unwrap()
                .iter()
                .map(short)
                .collect();
        assert_eq!(built, ["CLUSTER:LITERAL:kafka-cluster:User:*@*:ALL:ALLOW"]);
    }

    #[test]
    fn producer_and_consumer_add_what_those_clients_need() {
        let producer = add_args(&["--allow-principal", "User:p", "--producer", "--idempotent", "--topic", "t", "--transactional-id", "tx"]);
        let built: Vec<String> = bindings_to_add(&producer).unwrap().iter().map(short).collect();
        assert_eq!(
            built,
            [
                "TOPIC:LITERAL:t:User:p@*:WRITE:ALLOW",
                "TOPIC:LITERAL:t:User:p@*:DESCRIBE:ALLOW",
                "TOPIC:LITERAL:t:User:p@*:CREATE:ALLOW",
                "TRANSACTIONAL_ID:LITERAL:tx:User:p@*:WRITE:ALLOW",
                "TRANSACTIONAL_ID:LITERAL:tx:User:p@*:DESCRIBE:ALLOW",
                "CLUSTER:LITERAL:kafka-cluster:User:p@*:IDEMPOTENT_WRITE:ALLOW",
            ]
        );
        let consumer = add_args(&["--allow-principal", "User:c", "--consumer", "--topic", "t", "--group", "g"]);
        let built: Vec<String> = bindings_to_add(&consumer).unwrap().iter().map(short).collect();
        assert_eq!(
            built,
            ["TOPIC:LITERAL:t:User:c@*:READ:ALLOW", "TOPIC:LITERAL:t:User:c@*:DESCRIBE:ALLOW", "GROUP:LITERAL:g:User:c@*:READ:ALLOW"]
        );
        let error = bindings_to_add(&add_args(&["--allow-principal", "User:c", "--consumer", "--topic", "t"])).unwrap_err();
        assert_eq!(error.to_string(), "--consumer needs --topic and --group");
        assert!(parse(&["add", "--allow-principal", "User:c", "--producer", "--operation", "Read", "--topic", "t"]).is_err());
        assert!(parse(&["add", "--allow-principal", "User:c", "--idempotent", "--topic", "t"]).is_err());
    }

    // The checks made before any connection: their exit status is the usage one.
    #[test]
    fn add_refuses_bad_arguments_before_connecting() {
        for (args, message) in [
            (&["--topic", "t"][..], "give at least one --allow-principal or --deny-principal"),
            (&["--allow-principal", "User:a"][..], "give a resource"),
            (&["--allow-principal", "alice", "--topic", "t"][..], "expected a string in format principalType:principalName"),
            (&["--allow-principal", "User:a", "--cluster", "--operation", "Read"][..], "READ is not an operation on CLUSTER"),
            (&["--allow-principal", "User:a", "--topic", ""][..], "Invalid empty resource name"),
        ] {
            let error = bindings_to_add(&add_args(args)).unwrap_err();
            assert!(matches!(error, AdminError::Usage(_)), "{error:?}");
            assert!(error.to_string().starts_with(message), "{error}");
        }
        assert!(parse(&["add", "--allow-principal", "User:a", "--topic", "t", "--operation", "Fly"]).is_err());
        assert!(parse(&["add", "--allow-principal", "User:a", "--topic", "t", "--resource-pattern-type", "match"]).is_err());
    }

    #[test]
    fn list_and_remove_filters() {
        let AclsCommand::List(list) = parse(&["list"]).unwrap().command else { panic!() };
        assert_eq!(list_filters(&list), [AclBindingFilter::any()]);
        let AclsCommand::List(list) =
            parse(&["list", "--topic", "t", "--group", "g", "--principal", "User:a", "--output", "json"]).unwrap().command
        else {
            panic!()
        };
        let filters = list_filters(&list);
        assert_eq!(filters.len(), 2);
        assert_eq!(
            (filters[0].resource_type, filters[0].pattern, filters[0].principal.as_deref()),
            (Some(ResourceType::Topic), PatternFilter::Literal, Some("User:a"))
        );
        assert_eq!(list.output, Output::Json);

        let AclsCommand::Remove(remove) = parse(&["remove", "--topic", "t", "--resource-pattern-type", "match"]).unwrap().command else {
            panic!()
        };
        let filters = remove_filters(&remove).unwrap();
        assert_eq!(filters.len(), 1);
        assert_eq!((filters[0].pattern, filters[0].principal.as_deref(), filters[0].operation), (PatternFilter::Match, None, None));
        let AclsCommand::Remove(remove) =
            parse(&["remove", "--topic", "t", "--allow-principal", "User:a", "--operation", "Read", "--operation", "Write"]).unwrap().command
        else {
            panic!()
        };
        let filters = remove_filters(&remove).unwrap();
        let ops: Vec<_> = filters.iter().map(|f| (f.operation, f.host.clone(), f.permission)).collect();
        assert_eq!(ops, [(Some(Operation::Read), None, Some(Permission::Allow)), (Some(Operation::Write), None, Some(Permission::Allow))]);
        let AclsCommand::Remove(remove) = parse(&["remove", "--allow-principal", "User:a"]).unwrap().command else { panic!() };
        assert!(matches!(remove_filters(&remove), Err(AdminError::Usage(_))));
    }

    #[test]
    fn acls_render_as_a_table_and_as_json() {
        let bindings: BTreeSet<AclBinding> = [AclBinding {
            resource_type: ResourceType::Topic,
            resource_name: "orders".into(),
            pattern_type: PatternType::Literal,
            principal: "User:alice".into(),
            host: "*".into(),
            operation: Operation::Read,
            permission: Permission::Allow,
        }]
        .into();
        assert_eq!(
            render_acls(&bindings),
            "RESOURCE_TYPE NAME   PATTERN_TYPE PRINCIPAL  HOST OPERATION PERMISSION\n\
             TOPIC         orders LITERAL      User:alice *    READ      ALLOW\n"
        );
        let json: serde_json::Value = serde_json::from_str(&render_json(&bindings)).unwrap();
        assert_eq!(json[0]["principal"], "User:alice");
        assert_eq!(json[0]["operation"], "READ");
        assert_eq!(render_json(&BTreeSet::new()), "[]\n");
    }
}
