//! The broker's own metadata in the data directory: `meta.properties` (cluster id and node
//! id, as Kafka writes them) and `topics.json` (the topic table the controller commits).

use std::collections::BTreeMap;
use std::io;
use std::path::Path;

use odradek_core::log::LogConfig;
use odradek_core::topic::{TopicConfig, TopicMeta, TopicTable};
use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::config::ServerConfig;
use crate::groups::OFFSETS_TOPIC;
use crate::storage::write_file;

const TOPICS_FILE: &str = "topics.json";

#[derive(Serialize, Deserialize)]
struct StoredTopic {
    name: String,
    id: String,
    partitions: i32,
    configs: BTreeMap<String, String>,
}

/// Reads `meta.properties`, creating it with a fresh cluster id on first start. A data
/// directory written by another node id is refused, as Kafka does.
pub fn load_or_create_cluster_id(data_dir: &Path, node_id: i32, quorum: Option<&str>) -> io::Result<String> {
    let path = data_dir.join("meta.properties");
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let props = crate::config::parse_properties(&text)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{}: {e}", path.display())))?;
            let stored_node = props.get("node.id").and_then(|v| v.parse::<i32>().ok());
            if stored_node != Some(node_id) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{} belongs to node {stored_node:?}, not node {node_id}", path.display()),
                ));
            }
            props.get("cluster.id").cloned().ok_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidData, format!("{} has no cluster.id", path.display()))
            })
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            // Nodes of one cluster must report one cluster id (clients refuse a mix), and
            // odradek has no `kafka-storage format` step: derive it from the quorum they share.
            let cluster_id = match quorum {
                Some(quorum) => base64_url(&quorum_cluster_id(quorum)),
                None => base64_url(uuid::Uuid::new_v4().as_bytes()),
            };
            let text = format!("version=1\ncluster.id={cluster_id}\nnode.id={node_id}\n");
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, text)?;
            std::fs::File::open(&tmp)?.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            std::fs::File::open(data_dir)?.sync_all()?;
            Ok(cluster_id)
        }
        Err(e) => Err(e),
    }
}

/// 16 bytes from the quorum description (FNV-1a 64, twice with different offsets).
fn quorum_cluster_id(quorum: &str) -> [u8; 16] {
    let fnv = |basis: u64| {
        quorum.bytes().fold(basis, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
    };
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&fnv(0xcbf2_9ce4_8422_2325).to_be_bytes());
    id[8..].copy_from_slice(&fnv(0x6c62_272e_07bb_0142).to_be_bytes());
    id
}

/// Kafka prints cluster ids as URL-safe base64 of a UUID without padding.
fn base64_url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |acc, (i, &b)| acc | u32::from(b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// Loads the topic table; a missing file is an empty table.
pub fn load_topics(data_dir: &Path, defaults: &LogConfig) -> io::Result<TopicTable> {
    let path = data_dir.join(TOPICS_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(TopicTable::new()),
        Err(e) => return Err(e),
    };
    let stored: Vec<StoredTopic> = serde_json::from_slice(&bytes)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{}: {e}", path.display())))?;
    let mut table = TopicTable::new();
    for topic in stored {
        let id = uuid::Uuid::parse_str(&topic.id)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("topic {}: {e}", topic.name)))?;
        let config = TopicConfig::new(defaults, topic.configs)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("topic {}: {e}", topic.name)))?;
        table.insert(
            topic.name.clone(),
            TopicMeta { name: topic.name, id: *id.as_bytes(), partitions: topic.partitions, config },
        );
    }
    Ok(table)
}

fn encode_topics(table: &TopicTable) -> io::Result<Vec<u8>> {
    let stored: Vec<StoredTopic> = table
        .values()
        .map(|t| StoredTopic {
            name: t.name.clone(),
            id: uuid::Uuid::from_bytes(t.id).to_string(),
            partitions: t.partitions,
            configs: t.config.overrides.clone(),
        })
        .collect();
    serde_json::to_vec_pretty(&stored).map_err(io::Error::other)
}

pub async fn save_topics(data_dir: &Path, table: &TopicTable) -> io::Result<()> {
    write_file(&data_dir.join(TOPICS_FILE), encode_topics(table)?).await
}

/// Creates the internal `__consumer_offsets` topic on first start, before any core runs (so
/// plain blocking IO), or brings an existing one to the broker's settings for it: compacted
/// (the coordinator rebuilds groups by replaying it, so only each key's latest record
/// matters) with `offsets.topic.segment.bytes` segments, as Kafka creates it.
pub fn ensure_offsets_topic(data_dir: &Path, table: &mut TopicTable, config: &ServerConfig) -> io::Result<()> {
    let overrides = BTreeMap::from([
        ("cleanup.policy".to_owned(), "compact".to_owned()),
        ("segment.bytes".to_owned(), config.offsets_topic_segment_bytes.to_string()),
    ]);
    let topic_config = TopicConfig::new(&config.log, overrides).map_err(io::Error::other)?;
    match table.get_mut(OFFSETS_TOPIC) {
        Some(existing) if existing.config == topic_config => return Ok(()),
        Some(existing) => existing.config = topic_config,
        None => {
            table.insert(
                OFFSETS_TOPIC.to_owned(),
                TopicMeta {
                    name: OFFSETS_TOPIC.to_owned(),
                    id: *uuid::Uuid::new_v4().as_bytes(),
                    partitions: config.group.offsets_topic_partitions,
                    config: topic_config,
                },
            );
        }
    }
    save_topics_blocking(data_dir, table)
}

/// A clustered node keeps `__consumer_offsets` in the metadata log, replicated like any
/// topic. A node-local one left by a single-node start of this data dir is retired: its
/// records must not be mistaken for a replica of the cluster's partitions.
pub fn retire_node_local_offsets(data_dir: &Path, table: &mut TopicTable) -> io::Result<()> {
    let Some(old) = table.remove(OFFSETS_TOPIC) else { return Ok(()) };
    for p in 0..old.partitions {
        let dir = data_dir.join(format!("{OFFSETS_TOPIC}-{p}"));
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
    }
    tracing::warn!("removed a node-local {OFFSETS_TOPIC}: a cluster replicates its own");
    save_topics_blocking(data_dir, table)
}

fn save_topics_blocking(data_dir: &Path, table: &TopicTable) -> io::Result<()> {
    let path = data_dir.join(TOPICS_FILE);
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, encode_topics(table)?)?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    std::fs::File::open(data_dir)?.sync_all()
}

/// Removes partition directories whose topic is gone (a crash between committing a deletion
/// and removing its files), so a topic created later under that name starts empty.
pub fn remove_orphan_partitions(data_dir: &Path, table: &TopicTable) -> io::Result<()> {
    for entry in std::fs::read_dir(data_dir)? {
        let entry = entry?;
        if !entry.file_type()?.is_dir() {
            continue;
        }
        let Ok(name) = entry.file_name().into_string() else { continue };
        let Some((topic, partition)) = name.rsplit_once('-') else { continue };
        let Ok(partition) = partition.parse::<i32>() else { continue };
        let live = table.get(topic).is_some_and(|t| partition < t.partitions);
        if !live {
            warn!(dir = %name, "removing partition directory of a deleted topic");
            std::fs::remove_dir_all(entry.path())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_ids_look_like_kafkas() {
        assert_eq!(base64_url(&[0u8; 16]), "AAAAAAAAAAAAAAAAAAAAAA");
        assert_eq!(base64_url(&[0xff; 3]), "____");
        assert_eq!(base64_url(uuid::Uuid::new_v4().as_bytes()).len(), 22);
    }
}
