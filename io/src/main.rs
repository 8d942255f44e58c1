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
mod metrics;
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
    #[command(visible_alias = "groups")]
    Group(admin::GroupArgs),
    /// SCRAM users: add or replace a credential, list them, remove one. A client of a running
    /// broker, like kafka-configs.sh --entity-type users.
    Users(admin::users::UsersArgs),
    /// ACLs: add, list, remove. A client of a running broker, like kafka-acls.sh.
    Acls(admin::acls::AclsArgs),
    /// Topics: list, describe, create, delete, add partitions. Like kafka-topics.sh.
    Topics(admin::topics::TopicsArgs),
    /// Topic, broker and client-quota configs: describe, set, remove. Like kafka-configs.sh.
    Configs(admin::configs::ConfigsArgs),
    /// The cluster id, the controller and the brokers. Like kafka-cluster.sh cluster-id.
    Cluster(admin::cluster::ClusterArgs),
    /// Each broker's log directories and partition sizes. Like kafka-log-dirs.sh.
    LogDirs(admin::log_dirs::LogDirsArgs),
    /// Lines from stdin to a topic. Like kafka-console-producer.sh.
    Produce(admin::produce::ProduceArgs),
    /// A topic's records to stdout. Like kafka-console-consumer.sh.
    Consume(admin::consume::ConsumeArgs),
    /// Delete records before an offset. Like kafka-delete-records.sh.
    DeleteRecords(admin::delete_records::DeleteRecordsArgs),
    /// Move partition replicas between brokers: generate, execute, verify, cancel, list. A
    /// client of a running broker, like kafka-reassign-partitions.sh.
    Reassign(admin::reassign::ReassignArgs),
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
        Command::Topics(args) => std::process::exit(admin::topics::run(args)),
        Command::Configs(args) => std::process::exit(admin::configs::run(args)),
        Command::Cluster(args) => std::process::exit(admin::cluster::run(args)),
        Command::LogDirs(args) => std::process::exit(admin::log_dirs::run(args)),
        Command::Produce(args) => std::process::exit(admin::produce::run(args)),
        Command::Consume(args) => std::process::exit(admin::consume::run(args)),
        Command::DeleteRecords(args) => std::process::exit(admin::delete_records::run(args)),
        Command::Reassign(args) => std::process::exit(admin::reassign::run(args)),
    };
    if let Err(e) = result {
        tracing::error!("{e}");
        std::process::exit(1);
    }
}
