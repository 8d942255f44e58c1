//! `odradek users`: SCRAM credentials (KIP-554), after Kafka's
//! `kafka-configs.sh --entity-type users --alter --add-config 'SCRAM-SHA-512=[...]'`.
//!
//! A client of a running broker through AlterUserScramCredentials and
//! DescribeUserScramCredentials, on the same blocking connections as `odradek group`. As
//! KIP-554 has it, the password never leaves this process: `scram-add` draws a random salt,
//! salts the password here (PBKDF2, RFC 5802's `Hi`) and sends the salted password, from which
//! the broker derives the keys the metadata log stores.
//!
//! Exit status, for scripts: 0 done; 1 failed (unreachable broker, or the broker refused);
//! 2 bad arguments (as clap's own usage errors); 3 the user or credential does not exist
//! (`list --user`, `scram-remove`).

use std::io::Read;

use clap::{Parser, Subcommand};
use odradek_core::sasl::{self, Mechanism, MAX_SCRAM_ITERATIONS, MIN_SCRAM_ITERATIONS};

use super::messages::{self, AnswerError, CredentialInfo, Upsertion};
use super::{AdminError, ConnectArgs, Table};

pub const EXIT_FAILURE: i32 = 1;
pub const EXIT_USAGE: i32 = 2;
pub const EXIT_NOT_FOUND: i32 = 3;

/// Bytes of salt per credential: above the 16 Kafka's guidance asks for, and what Kafka's
/// ScramFormatter draws is about as long.
const SALT_BYTES: usize = 32;

/// SCRAM users: add or replace a credential, list them, remove one.
#[derive(Parser, Debug)]
pub struct UsersArgs {
    #[command(subcommand)]
    command: UsersCommand,
}

#[derive(Subcommand, Debug)]
enum UsersCommand {
    /// Add a SCRAM credential for a user, or replace the one it has for that mechanism.
    ScramAdd(ScramAddArgs),
    /// List users' SCRAM mechanisms and iterations (every user, or those named).
    List {
        /// Only this user (repeatable); exit status 3 when one has no credential.
        #[arg(long = "user", value_name = "USER")]
        users: Vec<String>,
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// Remove a user's SCRAM credential for one mechanism.
    ScramRemove {
        /// The user name.
        #[arg(long)]
        user: String,
        /// SCRAM-SHA-256 or SCRAM-SHA-512.
        #[arg(long, value_parser = parse_mechanism)]
        mechanism: Mechanism,
        #[command(flatten)]
        connect: ConnectArgs,
    },
}

#[derive(clap::Args, Debug)]
struct ScramAddArgs {
    /// The user name.
    #[arg(long)]
    user: String,
    /// The password. From the environment instead, it stays out of the process list.
    #[arg(long, env = "ODRADEK_SCRAM_PASSWORD", hide_env_values = true)]
    password: String,
    /// SCRAM-SHA-256 or SCRAM-SHA-512.
    #[arg(long, value_parser = parse_mechanism, default_value = "SCRAM-SHA-512")]
    mechanism: Mechanism,
    /// PBKDF2 iterations, within Kafka's bounds (4096 to 16384).
    #[arg(long, default_value_t = 8192)]
    iterations: i32,
    #[command(flatten)]
    connect: ConnectArgs,
}

fn parse_mechanism(text: &str) -> Result<Mechanism, String> {
    match Mechanism::parse(&text.to_ascii_uppercase()) {
        Some(m) if m.is_scram() => Ok(m),
        _ => Err(format!("{text:?} is not SCRAM-SHA-256 or SCRAM-SHA-512")),
    }
}

/// Why a `users` command failed; one line each.
#[derive(Debug, thiserror::Error)]
enum UsersError {
    #[error(transparent)]
    Admin(#[from] AdminError),
    #[error("{0}")]
    NotFound(String),
}

impl UsersError {
    fn exit_code(&self) -> i32 {
        match self {
            UsersError::Admin(AdminError::Usage(_)) => EXIT_USAGE,
            UsersError::Admin(_) => EXIT_FAILURE,
            UsersError::NotFound(_) => EXIT_NOT_FOUND,
        }
    }
}

/// Runs a `users` command; returns the process exit status.
pub fn run(args: UsersArgs) -> i32 {
    super::finish(execute(args), UsersError::exit_code)
}

fn execute(args: UsersArgs) -> Result<String, UsersError> {
    match args.command {
        UsersCommand::ScramAdd(args) => scram_add(&args),
        UsersCommand::List { users, connect } => {
            if users.iter().any(String::is_empty) {
                return Err(AdminError::Usage("the user name is empty".into()).into());
            }
            list(&connect, (!users.is_empty()).then_some(&users[..]))
        }
        UsersCommand::ScramRemove { user, mechanism, connect } => {
            validate_user(&user)?;
            let deletion = (user.clone(), scram_type(mechanism));
            alter(&connect, &user, &[deletion], &[])?;
            Ok(format!("Removed the {} credential of user '{user}'.\n", mechanism.name()))
        }
    }
}

fn validate_user(user: &str) -> Result<(), AdminError> {
    // Kafka's controller answers an empty name with UNACCEPTABLE_CREDENTIAL.
    match user.is_empty() {
        true => Err(AdminError::Usage("the user name is empty".into())),
        false => Ok(()),
    }
}

fn scram_type(mechanism: Mechanism) -> i8 {
    mechanism.scram_type().expect("parse_mechanism lets only SCRAM mechanisms through")
}

fn scram_add(args: &ScramAddArgs) -> Result<String, UsersError> {
    validate_user(&args.user)?;
    if args.password.is_empty() {
        return Err(AdminError::Usage("the password is empty".into()).into());
    }
    // Checked here too (the broker refuses them anyway): salting with a billion iterations
    // would keep the tool busy for minutes before the broker could say no.
    if !(MIN_SCRAM_ITERATIONS..=MAX_SCRAM_ITERATIONS).contains(&args.iterations) {
        return Err(AdminError::Usage(format!(
            "--iterations {} is outside Kafka's bounds for SCRAM, {MIN_SCRAM_ITERATIONS} to {MAX_SCRAM_ITERATIONS}",
            args.iterations
        ))
        .into());
    }
    let salt = random_salt()?;
    let rounds = u32::try_from(args.iterations).expect("iterations checked positive");
    let upsertion = Upsertion {
        user: args.user.clone(),
        mechanism: scram_type(args.mechanism),
        iterations: args.iterations,
        salted_password: sasl::salted_password(args.mechanism, &args.password, &salt, rounds),
        salt,
    };
    alter(&args.connect, &args.user, &[], &[upsertion])?;
    Ok(format!(
        "Set the {} credential of user '{}' ({} iterations).\n",
        args.mechanism.name(),
        args.user,
        args.iterations
    ))
}

fn random_salt() -> Result<Vec<u8>, AdminError> {
    let mut salt = vec![0u8; SALT_BYTES];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut salt))
        .map_err(|e| AdminError::Refused(format!("could not read a random salt from /dev/urandom: {e}")))?;
    Ok(salt)
}

/// Sends one alteration of `user` to any broker (it forwards to the active controller).
fn alter(connect: &ConnectArgs, user: &str, deletions: &[(String, i8)], upsertions: &[Upsertion]) -> Result<(), UsersError> {
    let mut cluster = connect.cluster();
    let connection = cluster.any_broker()?;
    let addr = connection.addr().to_owned();
    let (_, response) =
        connection.call(|v| messages::alter_user_scram_credentials_request(deletions, upsertions, v))?;
    messages::altered_user(&response, user).map_err(|error| {
        if is_not_found(&error) {
            let mechanism = deletions.first().and_then(|(_, m)| Mechanism::from_scram_type(*m));
            let what = mechanism.map_or("credential".to_owned(), |m| format!("{} credential", m.name()));
            return UsersError::NotFound(format!("user '{user}' has no {what}"));
        }
        AdminError::Answer { context: format!("AlterUserScramCredentials for user '{user}' at {addr}"), error }.into()
    })
}

fn is_not_found(error: &AnswerError) -> bool {
    matches!(error, AnswerError::Broker { code, .. } if *code == kafka_protocol::ResponseError::ResourceNotFound.code())
}

fn list(connect: &ConnectArgs, users: Option<&[String]>) -> Result<String, UsersError> {
    let mut cluster = connect.cluster();
    let connection = cluster.any_broker()?;
    let addr = connection.addr().to_owned();
    let (_, response) = connection.call(|v| messages::describe_user_scram_credentials_request(users, v))?;
    let context = || format!("DescribeUserScramCredentials at {addr}");
    let described = messages::described_scram_credentials(response)
        .map_err(|error| AdminError::Answer { context: context(), error })?;
    let mut rows = Vec::new();
    for (user, result) in described {
        match result {
            Ok(infos) => rows.extend(infos.into_iter().map(|info| (user.clone(), info))),
            Err(error) if is_not_found(&error) => {
                return Err(UsersError::NotFound(format!("user '{user}' has no SCRAM credential")))
            }
            Err(error) => return Err(AdminError::Answer { context: format!("{} for user '{user}'", context()), error }.into()),
        }
    }
    rows.sort_by(|a, b| (&a.0, a.1.mechanism).cmp(&(&b.0, b.1.mechanism)));
    Ok(render_credentials(&rows))
}

fn render_credentials(rows: &[(String, CredentialInfo)]) -> String {
    let mut table = Table::new(["USER", "MECHANISM", "ITERATIONS"]);
    for (user, info) in rows {
        let mechanism = Mechanism::from_scram_type(info.mechanism)
            .map_or_else(|| format!("UNKNOWN({})", info.mechanism), |m| m.name().to_owned());
        table.push([user.clone(), mechanism, info.iterations.to_string()]);
    }
    table.render()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<UsersArgs, clap::Error> {
        UsersArgs::try_parse_from(std::iter::once("users").chain(args.iter().copied()))
    }

    #[test]
    fn scram_add_defaults_and_mechanism_names() {
        let args = parse(&["scram-add", "--user", "alice", "--password", "pw"]).unwrap();
        let UsersCommand::ScramAdd(add) = args.command else { panic!() };
        assert_eq!((add.mechanism, add.iterations), (Mechanism::ScramSha512, 8192));
        assert_eq!(add.connect.bootstrap_server.0, vec!["127.0.0.1:9092".to_owned()]);
        let args = parse(&["scram-add", "--user", "a", "--password", "p", "--mechanism", "scram-sha-256"]).unwrap();
        assert!(matches!(args.command, UsersCommand::ScramAdd(ScramAddArgs { mechanism: Mechanism::ScramSha256, .. })));
        for bad in ["PLAIN", "SCRAM-SHA-1", ""] {
            assert!(parse(&["scram-add", "--user", "a", "--password", "p", "--mechanism", bad]).is_err(), "{bad}");
        }
        assert!(parse(&["scram-remove", "--user", "a"]).is_err(), "the mechanism is required to remove");
        let args = parse(&["list", "--user", "a", "--user", "b"]).unwrap();
        assert!(matches!(args.command, UsersCommand::List { ref users, .. } if users == &["a", "b"]));
    }

    // The checks made before any connection: their exit status is the usage one.
    #[test]
    fn scram_add_refuses_bad_arguments_before_connecting() {
        for (args, message) in [
            (&["--user", "", "--password", "p"][..], "the user name is empty"),
            (&["--user", "a", "--password", ""][..], "the password is empty"),
            (
                &["--user", "a", "--password", "p", "--iterations", "100"][..],
                "--iterations 100 is outside Kafka's bounds for SCRAM, 4096 to 16384",
            ),
            (&["--user", "a", "--password", "p", "--iterations", "16385"][..], "--iterations 16385 is outside"),
        ] {
            let UsersCommand::ScramAdd(add) = parse(&[&["scram-add"], args].concat()).unwrap().command else { panic!() };
            let error = scram_add(&add).unwrap_err();
            assert!(error.to_string().starts_with(message), "{error}");
            assert_eq!(error.exit_code(), EXIT_USAGE);
        }
        assert_eq!(UsersError::NotFound("x".into()).exit_code(), EXIT_NOT_FOUND);
        let unreachable = AdminError::Connect { addr: "h:1".into(), reason: "refused".into() };
        assert_eq!(UsersError::from(unreachable).exit_code(), EXIT_FAILURE);
    }

    #[test]
    fn scram_credentials_render_as_a_table() {
        let rows = [
            ("alice".to_owned(), CredentialInfo { mechanism: 1, iterations: 4096 }),
            ("alice".to_owned(), CredentialInfo { mechanism: 2, iterations: 8192 }),
            ("bob".to_owned(), CredentialInfo { mechanism: 9, iterations: 16_384 }),
        ];
        assert_eq!(
            render_credentials(&rows),
            "USER  MECHANISM     ITERATIONS\n\
             alice SCRAM-SHA-256 4096\n\
             alice SCRAM-SHA-512 8192\n\
             bob   UNKNOWN(9)    16384\n"
        );
        assert_eq!(random_salt().unwrap().len(), SALT_BYTES);
        assert_ne!(random_salt().unwrap(), random_salt().unwrap());
    }
}
