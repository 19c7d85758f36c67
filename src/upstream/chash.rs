//! Consistent hashing (Ketama): every node owns `160 × weight` points on a ring of u64
//! hashes (weights first divided by their gcd, as nginx's `hash … consistent` does); a key is
//! served by the node owning the first point at or after the key's hash. Removing a node
//! moves only the keys that node owned.

/// Points per unit of (reduced) weight.
pub const POINTS_PER_WEIGHT: u32 = 160;
/// At most this many points in all; heavier rings are scaled down.
pub const MAX_POINTS: u64 = 1 << 20;

/// A Ketama ring over node indexes.
#[derive(Debug)]
pub struct Chash {
    /// (point, node index), sorted by point.
    ring: Vec<(u64, u32)>,
}

/// 64-bit XXH3 of bytes: a fixed, documented algorithm, so every build and every instance
/// of Pylon maps a key to the same node.
pub fn hash_bytes(bytes: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(bytes)
}

impl Chash {
    /// Builds the ring. `ids` name the nodes (e.g. `host:port`): a node keeps its points
    /// whatever other nodes come or go. `None` when every weight is 0.
    pub fn new(ids: &[String], weights: &[u32]) -> Option<Self> {
        let gcd = weights.iter().fold(0u32, |a, &w| num_gcd(a, w)).max(1);
        let total: u64 = weights
            .iter()
            .map(|&w| u64::from(w / gcd) * u64::from(POINTS_PER_WEIGHT))
            .sum();
        if total == 0 {
            return None;
        }
        let scale = (MAX_POINTS as f64 / total as f64).min(1.0);
        let mut ring = Vec::new();
        for (i, (id, &w)) in ids.iter().zip(weights).enumerate() {
            if w == 0 {
                continue;
            }
            let points = ((f64::from(w / gcd * POINTS_PER_WEIGHT) * scale) as u64).max(1);
            for p in 0..points {
                ring.push((hash_bytes(format!("{id}-{p}").as_bytes()), i as u32));
            }
        }
        ring.sort_unstable();
        Some(Chash { ring })
    }

    /// The node for `key` among those `usable` accepts: the owner of the first point at or
    /// after the key's hash, walking on past unusable nodes. `None` when none is usable.
    pub fn select(&self, key: &[u8], usable: impl Fn(usize) -> bool) -> Option<usize> {
        let h = hash_bytes(key);
        let start = self.ring.partition_point(|&(p, _)| p < h);
        let n = self.ring.len();
        (0..n)
            .map(|k| self.ring[(start + k) % n].1 as usize)
            .find(|&i| usable(i))
    }
}

fn num_gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        num_gcd(b, a % b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("10.0.0.{i}:80")).collect()
    }

    #[test]
    fn same_key_same_node_and_removal_moves_only_that_nodes_keys() {
        let all = Chash::new(&ids(4), &[1, 1, 1, 1]).unwrap();
        let keys: Vec<String> = (0..2000).map(|k| format!("client-{k}")).collect();
        let before: Vec<usize> = keys
            .iter()
            .map(|k| all.select(k.as_bytes(), |_| true).unwrap())
            .collect();
        let again: Vec<usize> = keys
            .iter()
            .map(|k| all.select(k.as_bytes(), |_| true).unwrap())
            .collect();
        assert_eq!(before, again);
        // Every node gets a fair share (within ±40% of 500).
        for node in 0..4 {
            let c = before.iter().filter(|&&n| n == node).count();
            assert!((300..700).contains(&c), "node {node}: {c}");
        }
        // Node 2 gone: its keys move, no other key does.
        let after: Vec<usize> = keys
            .iter()
            .map(|k| all.select(k.as_bytes(), |i| i != 2).unwrap())
            .collect();
        for (b, a) in before.iter().zip(&after) {
            if *b != 2 {
                assert_eq!(a, b);
            } else {
                assert_ne!(*a, 2);
            }
        }
    }

    #[test]
    fn weights_shift_share_and_zero_weight_owns_nothing() {
        let ring = Chash::new(&ids(3), &[3, 1, 0]).unwrap();
        let counts = (0..4000).fold([0usize; 3], |mut c, k| {
            c[ring.select(format!("k{k}").as_bytes(), |_| true).unwrap()] += 1;
            c
        });
        assert_eq!(counts[2], 0);
        assert!(counts[0] > 2 * counts[1], "{counts:?}");
        assert!(Chash::new(&ids(2), &[0, 0]).is_none());
    }
}
