//! Which root tournaments' match lists are exactly what a known response
//! body reads to, so an unchanged body is not read again (DESIGN.md
//! section 9).
//!
//! Most of a run's CPU went into reading 1,500 match bodies that had not
//! changed since the run before. A [`BodyStamp`] ties a root's list in a
//! snapshot to the hash of the body it came from; when the next answer for
//! that root hashes the same, the fetch takes the list from the snapshot.
//! A stamp is only trusted when the snapshot's list still hashes to the
//! stamp's `list` digest ([`MatchBodies::verified`]): after dedup under a
//! lower root, a carry-over, a held shrink or a reload from Redis the list
//! may not be what the body says, and then the body is read as before.
//! The stamps are kept with the snapshot: in memory in the daemon, in
//! `precache:match_bodies` (written in the run's transaction) for `once`.

use std::collections::BTreeMap;

use xxhash_rust::xxh3::{Xxh3, xxh3_128};

use super::{Match, Snapshot, same_records};

/// A root's answer: the hash of its body, and the digest of the list it
/// reads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyStamp {
    pub body: u128,
    pub list: u64,
}

/// The hash of a response body (128 bits: a collision would hide a change).
pub fn body_hash(body: &[u8]) -> u128 {
    xxh3_128(body)
}

/// The digest of a match list: ids and texts, in order.
pub fn list_digest(list: &[Match]) -> u64 {
    let mut hasher = Xxh3::new();
    for m in list {
        hasher.update(&m.id.to_le_bytes());
        hasher.update(&(m.raw.len() as u64).to_le_bytes());
        hasher.update(m.raw.as_bytes());
    }
    hasher.digest()
}

impl BodyStamp {
    /// As stored in Redis: `{body:032x}:{list:016x}`.
    pub fn to_field(self) -> String {
        format!("{:032x}:{:016x}", self.body, self.list)
    }

    pub fn from_field(text: &str) -> Option<BodyStamp> {
        let (body, list) = text.split_once(':')?;
        Some(BodyStamp {
            body: u128::from_str_radix(body, 16).ok()?,
            list: u64::from_str_radix(list, 16).ok()?,
        })
    }
}

/// Root id → the stamp of the body its list came from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MatchBodies(pub BTreeMap<i64, BodyStamp>);

impl MatchBodies {
    /// The list `snapshot` holds for `root`, when `body` is the body it
    /// came from.
    pub fn reuse(&self, snapshot: &Snapshot, root: i64, body: u128) -> Option<Vec<Match>> {
        self.0
            .get(&root)
            .filter(|stamp| stamp.body == body)
            .and_then(|_| snapshot.matches_by_root.get(&root).cloned())
    }

    /// The stamps, from `preferred` or, for a root without one there, from
    /// `fallback` (the stamps of `fallback_snapshot`), that still describe
    /// `snapshot`'s list for their root. A list that is the very same records as in
    /// `fallback_snapshot`, with an unchanged stamp, is not hashed again.
    pub fn verified(
        snapshot: &Snapshot,
        preferred: &MatchBodies,
        fallback: &MatchBodies,
        fallback_snapshot: &Snapshot,
    ) -> MatchBodies {
        let mut kept = BTreeMap::new();
        for (root, list) in &snapshot.matches_by_root {
            let (first, second) = (preferred.0.get(root), fallback.0.get(root));
            if let (Some(stamp), Some(before)) =
                (second, fallback_snapshot.matches_by_root.get(root))
                && first.is_none_or(|f| f == stamp)
                && same_records(before, list)
            {
                kept.insert(*root, *stamp);
                continue;
            }
            // A root with a stamp of its own (answered this run) keeps only
            // that one: the older stamp may still describe its list (dedup
            // took what the new answer added), but then the list is not
            // what the root last said, and polling must know it.
            let candidates = match first {
                Some(own) => [Some(own), None],
                None => [second, None],
            };
            let mut digest = None;
            for stamp in candidates.into_iter().flatten() {
                if *digest.get_or_insert_with(|| list_digest(list)) == stamp.list {
                    kept.insert(*root, *stamp);
                    break;
                }
            }
        }
        MatchBodies(kept)
    }

    /// The fields to set and the roots to delete to go from `old` to `self`.
    pub fn changes_from(&self, old: &MatchBodies) -> (Vec<(i64, BodyStamp)>, Vec<i64>) {
        let set = self
            .0
            .iter()
            .filter(|(root, stamp)| old.0.get(root) != Some(stamp))
            .map(|(root, stamp)| (*root, *stamp))
            .collect();
        let removed = old
            .0
            .keys()
            .filter(|root| !self.0.contains_key(root))
            .copied()
            .collect();
        (set, removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn list(ids: &[(i64, i64)]) -> Vec<Match> {
        ids.iter()
            .map(|(id, goals)| {
                Match::from_json(&json!({"matchId": id, "tournamentId": 1, "goals": goals}))
                    .unwrap()
            })
            .collect()
    }

    fn snapshot(lists: &[(i64, Vec<Match>)]) -> Snapshot {
        Snapshot {
            matches_by_root: lists.iter().cloned().collect(),
            ..Snapshot::default()
        }
    }

    fn stamp(body: u128, list: &[Match]) -> BodyStamp {
        BodyStamp {
            body,
            list: list_digest(list),
        }
    }

    #[test]
    fn a_field_reads_back_and_garbage_is_none() {
        let s = BodyStamp {
            body: u128::MAX - 7,
            list: 42,
        };
        assert_eq!(BodyStamp::from_field(&s.to_field()), Some(s));
        assert_eq!(BodyStamp::from_field("zz:1"), None);
        assert_eq!(BodyStamp::from_field("12"), None);
    }

    #[test]
    fn the_digest_sees_order_ids_and_text() {
        let a = list(&[(1, 0), (2, 0)]);
        assert_eq!(list_digest(&a), list_digest(&list(&[(1, 0), (2, 0)])));
        assert_ne!(list_digest(&a), list_digest(&list(&[(2, 0), (1, 0)])));
        assert_ne!(list_digest(&a), list_digest(&list(&[(1, 0), (2, 1)])));
        assert_ne!(list_digest(&a), list_digest(&list(&[(1, 0)])));
    }

    #[test]
    fn a_list_is_reused_only_for_its_own_body() {
        let l = list(&[(1, 0)]);
        let snap = snapshot(&[(10, l.clone())]);
        let bodies = MatchBodies([(10, stamp(5, &l))].into());
        assert_eq!(bodies.reuse(&snap, 10, 5), Some(l));
        assert_eq!(bodies.reuse(&snap, 10, 6), None, "another body");
        assert_eq!(bodies.reuse(&snap, 11, 5), None, "another root");
    }

    #[test]
    fn a_stamp_whose_list_was_changed_after_reading_is_dropped() {
        let fetched = list(&[(1, 0), (2, 0)]);
        // Dedup took match 2 away, or a held run kept the older list.
        let kept = list(&[(1, 0)]);
        let snap = snapshot(&[
            (10, kept.clone()),
            (11, fetched.clone()),
            (12, kept.clone()),
        ]);
        let answer = MatchBodies([(10, stamp(1, &fetched)), (11, stamp(2, &fetched))].into());
        let previous = MatchBodies([(10, stamp(9, &kept)), (12, stamp(8, &kept))].into());
        let verified = MatchBodies::verified(&snap, &answer, &previous, &Snapshot::default());
        assert_eq!(
            verified,
            MatchBodies([(11, stamp(2, &fetched)), (12, stamp(8, &kept))].into()),
            "root 10 answered a body its list is not: no stamp, though the older one \
             still describes the list; root 12 (not answered: carried over) keeps its own"
        );
        let none = MatchBodies::verified(
            &snap,
            &answer,
            &MatchBodies::default(),
            &Snapshot::default(),
        );
        assert_eq!(none.0.keys().copied().collect::<Vec<_>>(), vec![11]);
    }

    #[test]
    fn changes_set_new_or_different_stamps_and_delete_gone_roots() {
        let (a, b) = (
            BodyStamp { body: 1, list: 1 },
            BodyStamp { body: 2, list: 2 },
        );
        let old = MatchBodies([(1, a), (2, a), (3, a)].into());
        let new = MatchBodies([(1, a), (2, b), (4, b)].into());
        assert_eq!(new.changes_from(&old), (vec![(2, b), (4, b)], vec![3]));
        assert_eq!(new.changes_from(&new), (vec![], vec![]));
    }

    #[test]
    fn the_very_same_list_keeps_its_stamp_and_a_changed_one_is_checked() {
        let l = list(&[(1, 0), (2, 0)]);
        let before = snapshot(&[(10, l.clone())]);
        let stamp = stamp(7, &l);
        let bodies = MatchBodies([(10, stamp)].into());
        // The same records (a clone shares them): kept without a digest.
        let same = before.clone();
        assert_eq!(
            MatchBodies::verified(&same, &bodies, &bodies, &before),
            bodies
        );
        // Equal text but not the same records: checked by digest, and kept.
        let reread = snapshot(&[(10, list(&[(1, 0), (2, 0)]))]);
        assert_eq!(
            MatchBodies::verified(&reread, &MatchBodies::default(), &bodies, &before),
            bodies
        );
        // Different records: dropped.
        let changed = snapshot(&[(10, list(&[(1, 0), (2, 5)]))]);
        assert_eq!(
            MatchBodies::verified(&changed, &MatchBodies::default(), &bodies, &before),
            MatchBodies::default()
        );
    }
}
