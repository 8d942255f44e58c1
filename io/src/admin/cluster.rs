//! `odradek cluster`: the cluster id, the controller and the brokers, as Kafka's
//! `kafka-cluster.sh cluster-id` and `kafka-broker-api-versions.sh` show them.
//!
//! DescribeCluster (KIP-700) from the first bootstrap server that answers; a broker without
//! it (Kafka before 2.8) is asked with Metadata instead, which carries the same facts.

use clap::Parser;
use kafka_protocol::messages::{DescribeClusterRequest, DescribeClusterResponse, MetadataResponse};
use serde_json::json;

use super::messages::{self, check, AnswerError};
use super::{AdminError, ConnectArgs, Output, Table};

/// DescribeCluster v1's endpoint type of brokers (KIP-919).
const BROKER_ENDPOINTS: i8 = 1;

/// The cluster id, the controller and the brokers.
#[derive(Parser, Debug)]
pub struct ClusterArgs {
    /// How to print them.
    #[arg(long, value_enum, default_value_t = Output::Human)]
    output: Output,
    #[command(flatten)]
    connect: ConnectArgs,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct ClusterDescription {
    cluster_id: Option<String>,
    /// -1 when none is known.
    controller_id: i32,
    brokers: Vec<Broker>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Broker {
    id: i32,
    host: String,
    port: i32,
    rack: Option<String>,
}

/// Runs a `cluster` command; returns the process exit status.
pub fn run(args: ClusterArgs) -> i32 {
    super::finish(execute(&args), |_| 1)
}

fn execute(args: &ClusterArgs) -> Result<String, AdminError> {
    let mut cluster = args.connect.cluster();
    let connection = cluster.any_broker()?;
    let addr = connection.addr().to_owned();
    let description = match connection.call(describe_cluster_request) {
        Ok((_, response)) => described_cluster(response)
            .map_err(|error| AdminError::Answer { context: format!("DescribeCluster at {addr}"), error })?,
        Err(AdminError::Unsupported { .. }) => {
            let (_, response) = connection.call(|v| messages::metadata_request(Some(&[]), v))?;
            cluster_from_metadata(response)
        }
        Err(e) => return Err(e),
    };
    Ok(match args.output {
        Output::Human => render(&description),
        Output::Json => format!("{}\n", to_json(&description)),
    })
}

fn describe_cluster_request(version: i16) -> DescribeClusterRequest {
    let request = DescribeClusterRequest::default();
    // v0 has no endpoint type; its default (brokers) must stay.
    if version >= 1 {
        request.with_endpoint_type(BROKER_ENDPOINTS)
    } else {
        request
    }
}

fn described_cluster(response: DescribeClusterResponse) -> Result<ClusterDescription, AnswerError> {
    check(response.error_code, response.error_message.as_ref())?;
    let mut brokers: Vec<Broker> = response
        .brokers
        .iter()
        .map(|b| Broker { id: b.broker_id.0, host: b.host.to_string(), port: b.port, rack: b.rack.as_ref().map(|r| r.to_string()) })
        .collect();
    brokers.sort_by_key(|b| b.id);
    Ok(ClusterDescription { cluster_id: Some(response.cluster_id.to_string()), controller_id: response.controller_id.0, brokers })
}

fn cluster_from_metadata(response: MetadataResponse) -> ClusterDescription {
    let mut brokers: Vec<Broker> = response
        .brokers
        .iter()
        .map(|b| Broker { id: b.node_id.0, host: b.host.to_string(), port: b.port, rack: b.rack.as_ref().map(|r| r.to_string()) })
        .collect();
    brokers.sort_by_key(|b| b.id);
    ClusterDescription { cluster_id: response.cluster_id.map(|c| c.to_string()), controller_id: response.controller_id.0, brokers }
}

fn render(description: &ClusterDescription) -> String {
    let controller = match description.controller_id {
        id if id < 0 => "none".to_owned(),
        id => id.to_string(),
    };
    let mut out =
        format!("Cluster ID: {}\nController: {controller}\n", description.cluster_id.as_deref().unwrap_or("none"));
    let mut table = Table::new(["ID", "HOST", "PORT", "RACK"]);
    for b in &description.brokers {
        table.push([b.id.to_string(), b.host.clone(), b.port.to_string(), b.rack.clone().unwrap_or_else(|| "-".to_owned())]);
    }
    out.push_str(&table.render());
    out
}

fn to_json(description: &ClusterDescription) -> serde_json::Value {
    json!({
        "cluster_id": description.cluster_id,
        "controller_id": description.controller_id,
        "brokers": description.brokers.iter().map(|b| json!({
            "id": b.id,
            "host": b.host,
            "port": b.port,
            "rack": b.rack,
        })).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
    use kafka_protocol::messages::ApiKey;
    use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

    #[test]
    fn describe_cluster_goes_out_for_brokers_in_every_version() {
        let (min, max) = messages::client_versions(ApiKey::DescribeCluster).unwrap();
        for version in min..=max {
            let mut buf = bytes::BytesMut::new();
            describe_cluster_request(version).encode(&mut buf, version).unwrap();
            let decoded = DescribeClusterRequest::decode(&mut buf.freeze(), version).unwrap();
            assert_eq!(decoded.endpoint_type, 1);
            assert!(!decoded.include_cluster_authorized_operations);
        }
    }

    #[test]
    fn cluster_prints_id_controller_and_brokers() {
        let broker = |id: i32, port| {
            DescribeClusterBroker::default().with_broker_id(id.into()).with_host(StrBytes::from_static_str("10.0.0.1")).with_port(port)
        };
        let response = DescribeClusterResponse::default()
            .with_cluster_id(StrBytes::from_static_str("abc"))
            .with_controller_id(2.into())
            .with_brokers(vec![broker(2, 9093), broker(1, 9092).with_rack(Some(StrBytes::from_static_str("r1")))]);
        let description = described_cluster(response).unwrap();
        assert_eq!(
            render(&description),
            "Cluster ID: abc\nController: 2\nID HOST     PORT RACK\n1  10.0.0.1 9092 r1\n2  10.0.0.1 9093 -\n"
        );
        let json = to_json(&description);
        assert_eq!(json["brokers"][1]["rack"], serde_json::Value::Null);
        assert_eq!(json["controller_id"], 2);
        let refused = DescribeClusterResponse::default().with_error_code(114);
        assert_eq!(described_cluster(refused).unwrap_err().to_string(), "MISMATCHED_ENDPOINT_TYPE (114)");
    }
}
