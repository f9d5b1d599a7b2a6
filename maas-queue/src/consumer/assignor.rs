//! Partition assignment among a group's members: Kafka's `range` and `roundrobin`.

use std::collections::{BTreeMap, BTreeSet};

/// How the group leader shares partitions among members.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Assignor {
    /// Per topic, consecutive ranges of partitions, the first members taking one more when
    /// they do not divide evenly (Kafka's `range`, the Java client's default).
    #[default]
    Range,
    /// All partitions of all topics dealt out one by one (Kafka's `roundrobin`).
    RoundRobin,
}

impl Assignor {
    /// The protocol name in the group protocol.
    pub fn name(self) -> &'static str {
        match self {
            Assignor::Range => "range",
            Assignor::RoundRobin => "roundrobin",
        }
    }

    /// The assignor named `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "range" => Some(Assignor::Range),
            "roundrobin" => Some(Assignor::RoundRobin),
            _ => None,
        }
    }

    /// Shares the partitions of `topics` (name → partition count) among `members`
    /// (member id → subscribed topics). Members subscribed to nothing get nothing.
    pub fn assign(
        self,
        members: &BTreeMap<String, BTreeSet<String>>,
        topics: &BTreeMap<String, i32>,
    ) -> BTreeMap<String, Vec<(String, i32)>> {
        let mut out: BTreeMap<String, Vec<(String, i32)>> =
            members.keys().map(|m| (m.clone(), Vec::new())).collect();
        match self {
            Assignor::Range => {
                for (topic, &count) in topics {
                    let subs: Vec<&String> = members
                        .iter()
                        .filter(|(_, t)| t.contains(topic))
                        .map(|(m, _)| m)
                        .collect();
                    if subs.is_empty() {
                        continue;
                    }
                    let (per, extra) = (count / subs.len() as i32, count % subs.len() as i32);
                    let mut next = 0;
                    for (i, m) in subs.iter().enumerate() {
                        let n = per + i32::from((i as i32) < extra);
                        for p in next..next + n {
                            out.get_mut(*m).expect("member").push((topic.clone(), p));
                        }
                        next += n;
                    }
                }
            }
            Assignor::RoundRobin => {
                let all: Vec<(String, i32)> = topics
                    .iter()
                    .flat_map(|(t, &n)| (0..n).map(move |p| (t.clone(), p)))
                    .collect();
                let ids: Vec<&String> = members.keys().collect();
                let mut turn = 0;
                for (topic, p) in all {
                    // The next member (in turn) subscribed to this topic.
                    for _ in 0..ids.len() {
                        let m = ids[turn % ids.len()];
                        turn += 1;
                        if members[m].contains(&topic) {
                            out.get_mut(m).expect("member").push((topic.clone(), p));
                            break;
                        }
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(n: usize, topics: &[&str]) -> BTreeMap<String, BTreeSet<String>> {
        (0..n)
            .map(|i| {
                (
                    format!("m{i}"),
                    topics.iter().map(|t| t.to_string()).collect(),
                )
            })
            .collect()
    }

    #[test]
    fn range_gives_the_first_members_the_remainder() {
        let topics = BTreeMap::from([("t".to_string(), 7)]);
        let a = Assignor::Range.assign(&members(3, &["t"]), &topics);
        let counts: Vec<usize> = a.values().map(Vec::len).collect();
        assert_eq!(counts, [3, 2, 2]);
        assert_eq!(
            a["m0"],
            vec![("t".into(), 0), ("t".into(), 1), ("t".into(), 2)]
        );
    }

    #[test]
    fn roundrobin_deals_partitions_out() {
        let topics = BTreeMap::from([("a".to_string(), 2), ("b".to_string(), 2)]);
        let a = Assignor::RoundRobin.assign(&members(3, &["a", "b"]), &topics);
        assert_eq!(a["m0"], vec![("a".into(), 0), ("b".into(), 1)]);
        assert_eq!(a["m1"], vec![("a".into(), 1)]);
        assert_eq!(a["m2"], vec![("b".into(), 0)]);
    }

    #[test]
    fn every_partition_exactly_once() {
        let topics = BTreeMap::from([("a".to_string(), 6), ("b".to_string(), 5)]);
        for assignor in [Assignor::Range, Assignor::RoundRobin] {
            for n in 1..8 {
                let a = assignor.assign(&members(n, &["a", "b"]), &topics);
                let mut all: Vec<_> = a.values().flatten().cloned().collect();
                all.sort();
                assert_eq!(all.len(), 11);
                all.dedup();
                assert_eq!(all.len(), 11, "{assignor:?} with {n} members");
            }
        }
    }
}
