//! The local, explainable trust score of a marketplace app.
//!
//! Nobody else's opinion is imported wholesale: the score is computed on the node from
//! the operator's own key and follow list (kind 3), and every point comes with a
//! sentence saying where it came from. Endorsements and reports count only when they
//! come from keys the operator trusts (the operator and the keys they follow), so a
//! thousand fresh keys endorsing an app add nothing (sybil resistance). The formula is
//! written down in `docs/marketplace-protocol.md`; the constants below are it.

use std::collections::{BTreeMap, BTreeSet};

use nostr_sdk::prelude::*;
use serde::Serialize;

use crate::index::{npub, AppListing, Index, Successions};

/// Developer is the operator.
pub const SELF_POINTS: i32 = 100;
/// Developer is followed by the operator.
pub const FOLLOWED_POINTS: i32 = 50;
/// Per key the operator follows that follows the developer.
pub const FOLLOWED_BY_FOLLOW_POINTS: i32 = 10;
pub const FOLLOWED_BY_FOLLOW_CAP: i32 = 30;
/// Per trusted key that endorses the app.
pub const ENDORSEMENT_POINTS: i32 = 15;
pub const ENDORSEMENT_CAP: i32 = 45;
/// Per trusted key that reported the app or its developer (no cap).
pub const REPORT_POINTS: i32 = -40;
/// Per relay that carries the app's current announcement.
pub const RELAY_POINTS: i32 = 2;
pub const RELAY_CAP: i32 = 10;
/// Per full 30 days since the app was first published.
pub const AGE_POINTS_PER_30_DAYS: i32 = 1;
pub const AGE_CAP: i32 = 10;

/// How far the operator should trust an app, coarsely.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    /// By the operator or a key the operator follows, and not reported by a trusted key.
    Verified,
    /// Two hops away in the follow graph, or endorsed by a trusted key; not reported.
    Community,
    /// Everything else, including anything a trusted key reported.
    Unverified,
}

impl std::fmt::Display for Tier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Tier::Verified => "verified",
            Tier::Community => "community",
            Tier::Unverified => "unverified",
        })
    }
}

/// One contribution to a score.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reason {
    pub points: i32,
    pub text: String,
}

/// A score, its tier and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TrustScore {
    pub score: i32,
    pub tier: Tier,
    pub reasons: Vec<Reason>,
}

/// What the score is computed against: the operator's view of the follow graph.
#[derive(Debug, Clone, Default)]
pub struct TrustContext {
    operator: Option<PublicKey>,
    /// Keys the operator follows.
    follows: BTreeSet<PublicKey>,
    /// For each key: which of the operator's follows follow it.
    followed_by_follows: BTreeMap<PublicKey, BTreeSet<PublicKey>>,
    successions: Successions,
}

impl TrustContext {
    /// Builds the context from the contact lists in `index`.
    pub fn new(index: &Index, operator: Option<PublicKey>) -> Self {
        let follows: BTreeSet<PublicKey> = operator
            .and_then(|me| index.follows(&me).cloned())
            .unwrap_or_default();
        let mut followed_by_follows: BTreeMap<PublicKey, BTreeSet<PublicKey>> = BTreeMap::new();
        for f in &follows {
            for g in index.follows(f).into_iter().flatten() {
                followed_by_follows.entry(*g).or_default().insert(*f);
            }
        }
        Self {
            operator,
            follows,
            followed_by_follows,
            successions: index.successions(),
        }
    }

    /// Whether endorsements and reports by `key` count.
    pub fn is_trusted(&self, key: &PublicKey) -> bool {
        self.operator.as_ref() == Some(key) || self.follows.contains(key)
    }

    /// Scores one listing as of `now`.
    pub fn score(&self, listing: &AppListing, now: Timestamp) -> TrustScore {
        let mut reasons = Vec::new();
        let dev = listing.developer;
        // A rotated key inherits the standing of the keys it succeeds.
        let mut identities = vec![dev];
        identities.extend(self.successions.predecessors(&dev));
        if let Some(old) = listing.continues {
            if !identities.contains(&old) {
                identities.push(old);
            }
        }
        if identities.len() > 1 {
            let olds: Vec<String> = identities[1..].iter().map(npub).collect();
            reasons.push(Reason {
                points: 0,
                text: format!("key rotation: succeeds {}", olds.join(", ")),
            });
        }
        if self.successions.disputed.contains(&dev) {
            reasons.push(Reason {
                points: 0,
                text: "this key named more than one successor: its rotation is disputed".into(),
            });
        }

        let is_me = identities.iter().any(|k| self.operator.as_ref() == Some(k));
        let followed = identities.iter().any(|k| self.follows.contains(k));
        let via: BTreeSet<PublicKey> = identities
            .iter()
            .filter_map(|k| self.followed_by_follows.get(k))
            .flatten()
            .copied()
            .collect();
        let distance = if is_me {
            reasons.push(Reason {
                points: SELF_POINTS,
                text: "published by you".into(),
            });
            0
        } else if followed {
            reasons.push(Reason {
                points: FOLLOWED_POINTS,
                text: "followed by you".into(),
            });
            1
        } else if !via.is_empty() {
            let n = via.len() as i32;
            reasons.push(Reason {
                points: (n * FOLLOWED_BY_FOLLOW_POINTS).min(FOLLOWED_BY_FOLLOW_CAP),
                text: format!("followed by {n} {} you follow", people(n)),
            });
            2
        } else {
            reasons.push(Reason {
                points: 0,
                text: match self.operator {
                    Some(_) => "not in your follow graph".into(),
                    None => "no operator key configured (--me): follow graph unknown".into(),
                },
            });
            3
        };

        let (trusted_endorsers, other_endorsers): (Vec<&PublicKey>, Vec<&PublicKey>) = listing
            .endorsers
            .iter()
            .filter(|k| !identities.contains(k))
            .partition(|k| self.is_trusted(k));
        if !trusted_endorsers.is_empty() {
            let n = trusted_endorsers.len() as i32;
            reasons.push(Reason {
                points: (n * ENDORSEMENT_POINTS).min(ENDORSEMENT_CAP),
                text: format!("endorsed by {n} {} you trust", people(n)),
            });
        }
        if !other_endorsers.is_empty() {
            reasons.push(Reason {
                points: 0,
                text: format!(
                    "{} endorsement(s) from keys you do not trust (ignored)",
                    other_endorsers.len()
                ),
            });
        }

        let mut trusted_reporters: BTreeMap<PublicKey, BTreeSet<&str>> = BTreeMap::new();
        let mut other_reporters: BTreeSet<PublicKey> = BTreeSet::new();
        for r in &listing.reports {
            if self.is_trusted(&r.reporter) {
                trusted_reporters
                    .entry(r.reporter)
                    .or_default()
                    .insert(&r.reason);
            } else {
                other_reporters.insert(r.reporter);
            }
        }
        if !trusted_reporters.is_empty() {
            let n = trusted_reporters.len() as i32;
            let kinds: BTreeSet<&str> = trusted_reporters.values().flatten().copied().collect();
            reasons.push(Reason {
                points: n * REPORT_POINTS,
                text: format!(
                    "reported by {n} {} you trust ({})",
                    people(n),
                    kinds.into_iter().collect::<Vec<_>>().join(", ")
                ),
            });
        }
        if !other_reporters.is_empty() {
            reasons.push(Reason {
                points: 0,
                text: format!(
                    "{} report(s) from keys you do not trust (ignored)",
                    other_reporters.len()
                ),
            });
        }

        let k = listing.relays.len() as i32;
        reasons.push(Reason {
            points: (k * RELAY_POINTS).min(RELAY_CAP),
            text: format!("seen on {k} relay{}", if k == 1 { "" } else { "s" }),
        });

        let days = now
            .as_secs()
            .saturating_sub(listing.first_published.as_secs())
            / 86_400;
        let months = i32::try_from(days / 30).unwrap_or(i32::MAX);
        reasons.push(Reason {
            points: months.saturating_mul(AGE_POINTS_PER_30_DAYS).min(AGE_CAP),
            text: format!(
                "first published {days} day{} ago",
                if days == 1 { "" } else { "s" }
            ),
        });

        let reported = !trusted_reporters.is_empty();
        let tier = if reported {
            Tier::Unverified
        } else if distance <= 1 {
            Tier::Verified
        } else if distance == 2 || !trusted_endorsers.is_empty() {
            Tier::Community
        } else {
            Tier::Unverified
        };
        TrustScore {
            score: reasons.iter().map(|r| r.points).sum(),
            tier,
            reasons,
        }
    }
}

fn people(n: i32) -> &'static str {
    if n == 1 {
        "person"
    } else {
        "people"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        announcement::{endorsement_builder, successor_builder, tests::content},
        index::Index,
    };

    const NOW: u64 = 1_800_000_000;
    const DAY: u64 = 86_400;

    /// A small world: the operator, the keys they follow, the developer, strangers.
    struct World {
        me: Keys,
        friends: Vec<Keys>,
        dev: Keys,
        events: Vec<Event>,
        relays: Vec<&'static str>,
    }

    impl World {
        fn new() -> Self {
            let dev = Keys::generate();
            let c = content("org.example.a", "A", "1.0.0");
            let [a, r] = crate::announcement::announcement_builders(&c, None).unwrap();
            let t = Timestamp::from(NOW - 95 * DAY);
            Self {
                me: Keys::generate(),
                friends: (0..4).map(|_| Keys::generate()).collect(),
                events: vec![
                    a.custom_created_at(t).sign_with_keys(&dev).unwrap(),
                    r.custom_created_at(t).sign_with_keys(&dev).unwrap(),
                ],
                dev,
                relays: vec!["ws://r1"],
            }
        }
        fn follow(&mut self, who: &Keys, whom: &[PublicKey]) {
            let e = EventBuilder::contact_list(whom.iter().map(|k| Contact::new(*k)))
                .sign_with_keys(who)
                .unwrap();
            self.events.push(e);
        }
        fn me_follows_friends(&mut self) {
            let friends: Vec<_> = self.friends.iter().map(|k| k.public_key()).collect();
            let me = self.me.clone();
            self.follow(&me, &friends);
        }
        fn score(&self, operator: bool) -> TrustScore {
            let mut idx = Index::new();
            for e in &self.events {
                for r in &self.relays {
                    idx.ingest(e, r);
                }
            }
            let ctx = TrustContext::new(&idx, operator.then(|| self.me.public_key()));
            let apps = idx.apps(Timestamp::from(NOW));
            assert_eq!(apps.len(), 1);
            ctx.score(&apps[0], Timestamp::from(NOW))
        }
        fn endorse(&mut self, by: &Keys) {
            let e = endorsement_builder(&self.dev.public_key(), "org.example.a")
                .sign_with_keys(by)
                .unwrap();
            self.events.push(e);
        }
        fn report(&mut self, by: &Keys) {
            let e = EventBuilder::report(
                [Tag::public_key_report(
                    self.dev.public_key(),
                    Report::Malware,
                )],
                "",
            )
            .sign_with_keys(by)
            .unwrap();
            self.events.push(e);
        }
    }

    fn has(s: &TrustScore, text: &str) -> bool {
        s.reasons.iter().any(|r| r.text.contains(text))
    }

    #[test]
    fn table_of_worlds() {
        // (what, setup, expected score, tier, reason that must appear)
        type Setup = fn(&mut World);
        let cases: Vec<(&str, Setup, i32, Tier, &str)> = vec![
            (
                "stranger: relays and age only",
                |_| {},
                2 + 3,
                Tier::Unverified,
                "not in your follow graph",
            ),
            (
                "followed by you",
                |w| {
                    let (me, dev) = (w.me.clone(), w.dev.public_key());
                    w.follow(&me, &[dev]);
                },
                50 + 2 + 3,
                Tier::Verified,
                "followed by you",
            ),
            (
                "followed by 2 people you follow",
                |w| {
                    w.me_follows_friends();
                    let dev = w.dev.public_key();
                    for f in w.friends.clone().iter().take(2) {
                        w.follow(f, &[dev]);
                    }
                },
                20 + 2 + 3,
                Tier::Community,
                "followed by 2 people you follow",
            ),
            (
                "followed by 4 people you follow (capped)",
                |w| {
                    w.me_follows_friends();
                    let dev = w.dev.public_key();
                    for f in w.friends.clone().iter() {
                        w.follow(f, &[dev]);
                    }
                },
                30 + 2 + 3,
                Tier::Community,
                "followed by 4 people",
            ),
            (
                "endorsed by a trusted key",
                |w| {
                    w.me_follows_friends();
                    let f = w.friends[0].clone();
                    w.endorse(&f);
                },
                15 + 2 + 3,
                Tier::Community,
                "endorsed by 1 person you trust",
            ),
            (
                "100 sybil endorsements count for nothing",
                |w| {
                    w.me_follows_friends();
                    for _ in 0..100 {
                        w.endorse(&Keys::generate());
                    }
                },
                2 + 3,
                Tier::Unverified,
                "100 endorsement(s) from keys you do not trust (ignored)",
            ),
            (
                "followed, but reported by a trusted key",
                |w| {
                    let mut follows: Vec<_> = w.friends.iter().map(|k| k.public_key()).collect();
                    follows.push(w.dev.public_key());
                    let me = w.me.clone();
                    w.follow(&me, &follows);
                    let f = w.friends[1].clone();
                    w.report(&f);
                },
                50 - 40 + 2 + 3,
                Tier::Unverified,
                "reported by 1 person you trust (malware)",
            ),
            (
                "untrusted reports are ignored",
                |w| {
                    let (me, dev) = (w.me.clone(), w.dev.public_key());
                    w.follow(&me, &[dev]);
                    w.report(&Keys::generate());
                },
                50 + 2 + 3,
                Tier::Verified,
                "1 report(s) from keys you do not trust (ignored)",
            ),
            (
                "seen on many relays (capped)",
                |w| {
                    w.relays = vec![
                        "ws://a", "ws://b", "ws://c", "ws://d", "ws://e", "ws://f", "ws://g",
                    ]
                },
                10 + 3,
                Tier::Unverified,
                "seen on 7 relays",
            ),
        ];
        for (what, setup, score, tier, reason) in cases {
            let mut w = World::new();
            setup(&mut w);
            let s = w.score(true);
            assert_eq!((s.score, s.tier), (score, tier), "{what}: {:#?}", s.reasons);
            assert!(has(&s, reason), "{what}: {:#?}", s.reasons);
            assert_eq!(s.score, s.reasons.iter().map(|r| r.points).sum::<i32>());
        }
    }

    #[test]
    fn without_an_operator_everything_is_unverified() {
        let mut w = World::new();
        w.me_follows_friends();
        let f = w.friends[0].clone();
        w.endorse(&f);
        let s = w.score(false);
        assert_eq!(s.tier, Tier::Unverified);
        assert!(has(&s, "no operator key configured"));
        assert!(has(&s, "from keys you do not trust"));
    }

    #[test]
    fn own_app_is_verified() {
        let mut w = World::new();
        w.me = w.dev.clone();
        let s = w.score(true);
        assert_eq!(s.tier, Tier::Verified);
        assert!(has(&s, "published by you"));
    }

    #[test]
    fn rotated_key_inherits_the_old_keys_standing() {
        let mut w = World::new();
        let (me, old) = (w.me.clone(), w.dev.public_key());
        w.follow(&me, &[old]);
        // The developer rotates: the old key names the new one; the new key publishes.
        let new = Keys::generate();
        let stmt = successor_builder(&new.public_key())
            .sign_with_keys(&w.dev)
            .unwrap();
        w.events.push(stmt);
        let [a, _] =
            crate::announcement::tests::announce(&new, &content("org.example.a", "A", "2.0.0"));
        w.events.push(a);
        let s = w.score(true);
        assert_eq!(s.tier, Tier::Verified, "{:#?}", s.reasons);
        assert!(has(&s, "key rotation: succeeds"));
        assert!(has(&s, "followed by you"));
    }
}
