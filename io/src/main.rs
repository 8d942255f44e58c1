//! `odradek`: the broker binary.

mod admin;
mod clock;
mod cluster;
mod config;
mod fetcher;
mod groups;
mod handlers;
mod listeners;
mod meta;
mod replication;
mod server;
mod shard;
mod session;
mod shared;
mod storage;
mod tls;
mod txns;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(name = "odradek", version, about = "A Kafka-compatible event log: thread-per-core, io_uring, fsync before ack")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a broker. With no flags: one node on 127.0.0.1:9092, data in ./data, every core.
    Serve(Box<config::ServeArgs>),
    /// Consumer groups: list, describe (members, offsets, lag), reset offsets. A client of a
    /// running broker, like kafka-consumer-groups.sh.
    Group(admin::GroupArgs),
    /// SCRAM users: add or replace a credential, list them, remove one. A client of a running
    /// broker, like kafka-configs.sh --entity-type users.
    Users(admin::users::UsersArgs),
    /// ACLs: add, list, remove. A client of a running broker, like kafka-acls.sh.
    Acls(admin::acls::AclsArgs),
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => args.resolve().and_then(server::serve),
        // An admin command reports its own failure: one plain line on stderr, no log prefix.
        Command::Group(args) => std::process::exit(admin::run(args)),
        Command::Users(args) => std::process::exit(admin::users::run(args)),
        Command::Acls(args) => std::process::exit(admin::acls::run(args)),
    };
    if let Err(e) = result {
        tracing::error!("{e}");
        std::process::exit(1);
    }
}
