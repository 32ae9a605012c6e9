//! The operator's view of the marketplace: listings ranked by trust, searchable, and
//! resolvable by (developer, app id). Pure: built from an [`Index`] and a clock.

use nostr_sdk::prelude::*;
use serde_json::json;

use crate::{
    announcement::AnnouncementContent,
    index::{npub, AppListing, Index, Rejection},
    trust::{TrustContext, TrustScore},
};

/// One app with its trust score.
#[derive(Debug, Clone)]
pub struct ScoredApp {
    pub listing: AppListing,
    pub trust: TrustScore,
}

impl ScoredApp {
    /// `npub.../app.id`, the handle `archy market show` takes.
    pub fn handle(&self) -> AppHandle {
        AppHandle {
            developer: self.listing.developer,
            app_id: self.listing.app_id.clone(),
        }
    }

    /// What to install: the current release, or the release `version` if it is live.
    pub fn release(&self, version: Option<&str>) -> Option<&AnnouncementContent> {
        match version {
            None => Some(&self.listing.current.content),
            Some(v) => self
                .listing
                .releases
                .iter()
                .find(|r| r.version() == v)
                .map(|r| &r.content),
        }
    }

    /// Everything a script needs, as JSON.
    pub fn to_json(&self) -> serde_json::Value {
        let l = &self.listing;
        let c = &l.current.content;
        json!({
            "handle": self.handle(),
            "developer": npub(&l.developer),
            "developer_hex": l.developer.to_hex(),
            "app_id": l.app_id,
            "name": c.manifest.name,
            "version": c.manifest.version,
            "description": c.manifest.description.short,
            "categories": l.current.categories,
            "manifest": c.manifest,
            "image": c.image,
            "providers": c.providers,
            "releases": l.releases.iter().map(|r| r.version().to_string()).collect::<Vec<_>>(),
            "event_id": l.current.event_id.to_hex(),
            "first_published": l.first_published.as_secs(),
            "relays": l.relays,
            "reports": l.reports,
            "endorsers": l.endorsers.iter().map(npub).collect::<Vec<_>>(),
            "continues": l.continues.as_ref().map(npub),
            "warnings": l.warnings,
            "trust": self.trust,
        })
    }

    /// Whether every word occurs (case-insensitively) in the id, name, description
    /// or categories.
    pub fn matches(&self, words: &[String]) -> bool {
        let m = &self.listing.current.content.manifest;
        let mut hay = format!(
            "{} {} {} {}",
            m.id,
            m.name,
            m.description.short,
            m.description.long.as_deref().unwrap_or_default()
        );
        for c in &self.listing.current.categories {
            hay.push(' ');
            hay.push_str(c);
        }
        let hay = hay.to_lowercase();
        words.iter().all(|w| hay.contains(&w.to_lowercase()))
    }
}

/// Ranked, scored apps plus what was refused on the way.
#[derive(Debug)]
pub struct MarketView {
    apps: Vec<ScoredApp>,
    index: Index,
}

impl MarketView {
    /// Scores every live app in `index` for `operator` as of `now`, best first.
    pub fn new(index: Index, operator: Option<PublicKey>, now: Timestamp) -> Self {
        let ctx = TrustContext::new(&index, operator);
        let mut apps: Vec<ScoredApp> = index
            .apps(now)
            .into_iter()
            .map(|listing| ScoredApp {
                trust: ctx.score(&listing, now),
                listing,
            })
            .collect();
        apps.sort_by(|a, b| {
            b.trust
                .score
                .cmp(&a.trust.score)
                .then(a.trust.tier.cmp(&b.trust.tier))
                .then_with(|| a.listing.current.name().cmp(b.listing.current.name()))
                .then_with(|| a.listing.developer.cmp(&b.listing.developer))
        });
        Self { apps, index }
    }

    /// Every app, best first.
    pub fn apps(&self) -> &[ScoredApp] {
        &self.apps
    }

    /// Apps matching every word (all apps when `words` is empty), best first.
    pub fn search(&self, words: &[String]) -> Vec<&ScoredApp> {
        self.apps.iter().filter(|a| a.matches(words)).collect()
    }

    /// The app `app_id` of `developer` (or of a key it succeeded), if live.
    pub fn resolve(&self, developer: &PublicKey, app_id: &str) -> Option<&ScoredApp> {
        self.apps.iter().find(|a| {
            a.listing.app_id == app_id
                && (a.listing.developer == *developer
                    || a.listing.continues.as_ref() == Some(developer))
        })
    }

    /// Events refused while building the view, with reasons.
    pub fn rejections(&self) -> &[Rejection] {
        self.index.rejections()
    }
}

/// Why a `PUBKEY/APP_ID` handle does not parse.
#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    #[error("{handle:?}: expected PUBKEY/APP_ID (npub or hex key)")]
    NoSlash { handle: String },
    #[error("{handle:?}: {key:?} is not a public key (npub or hex)")]
    BadKey {
        handle: String,
        key: String,
        #[source]
        source: nostr_sdk::nostr::key::Error,
    },
    #[error("{handle:?}: {app_id:?} is not a valid app id")]
    BadAppId { handle: String, app_id: String },
}

/// A marketplace app's name: its developer's key and its app id. Written
/// `npub1.../org.example.app` (the key may also be given in hex); two spellings of one
/// key are one handle. Stored and sent as that string.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AppHandle {
    pub developer: PublicKey,
    pub app_id: String,
}

impl std::str::FromStr for AppHandle {
    type Err = HandleError;

    fn from_str(handle: &str) -> Result<Self, HandleError> {
        let (key, app_id) = handle.split_once('/').ok_or_else(|| HandleError::NoSlash {
            handle: handle.to_string(),
        })?;
        let developer = PublicKey::parse(key).map_err(|source| HandleError::BadKey {
            handle: handle.to_string(),
            key: key.to_string(),
            source,
        })?;
        if !archy_catalog::manifest::is_valid_app_id(app_id) {
            return Err(HandleError::BadAppId {
                handle: handle.to_string(),
                app_id: app_id.to_string(),
            });
        }
        Ok(AppHandle {
            developer,
            app_id: app_id.to_string(),
        })
    }
}

impl TryFrom<String> for AppHandle {
    type Error = HandleError;

    fn try_from(s: String) -> Result<Self, HandleError> {
        s.parse()
    }
}

impl From<AppHandle> for String {
    fn from(h: AppHandle) -> String {
        h.to_string()
    }
}

impl std::fmt::Display for AppHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", npub(&self.developer), self.app_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::announcement::tests::{announce, content};

    #[test]
    fn followed_developer_ranks_first_and_search_matches_words() {
        let me = Keys::generate();
        let known = Keys::generate();
        let unknown = Keys::generate();
        let mut idx = Index::new();
        for e in announce(&unknown, &content("org.example.notes", "Notes", "1.0.0")) {
            idx.ingest(&e, "ws://r1");
            idx.ingest(&e, "ws://r2");
        }
        for e in announce(&known, &content("org.example.jot", "Jot Notes", "1.0.0")) {
            idx.ingest(&e, "ws://r1");
        }
        let follow = EventBuilder::contact_list([Contact::new(known.public_key())])
            .sign_with_keys(&me)
            .unwrap();
        idx.ingest(&follow, "ws://r1");
        let view = MarketView::new(idx, Some(me.public_key()), Timestamp::now());
        let hits = view.search(&["notes".into()]);
        assert_eq!(hits.len(), 2);
        assert_eq!(hits[0].listing.developer, known.public_key());
        assert!(view.search(&["jot".into(), "NOTES".into()]).len() == 1);
        assert!(view.search(&["nothing-like-this".into()]).is_empty());
        let found = view
            .resolve(&unknown.public_key(), "org.example.notes")
            .unwrap();
        assert_eq!(found.to_json()["relays"].as_array().unwrap().len(), 2);
        assert!(view
            .resolve(&known.public_key(), "org.example.notes")
            .is_none());
    }

    #[test]
    fn handles_parse_with_clear_errors() {
        let k = Keys::generate().public_key();
        let parse = |s: &str| s.parse::<AppHandle>();
        let by_npub = format!("{}/org.example.a", npub(&k));
        let h = parse(&by_npub).unwrap();
        assert_eq!((h.developer, h.app_id.as_str()), (k, "org.example.a"));
        let by_hex = parse(&format!("{}/org.example.a", k.to_hex())).unwrap();
        assert_eq!(by_hex, h, "hex and npub spell one key");
        assert_eq!(by_hex.to_string(), by_npub, "written with the npub");
        let json = serde_json::to_string(&h).unwrap();
        assert_eq!(serde_json::from_str::<AppHandle>(&json).unwrap(), h);
        assert!(serde_json::from_str::<AppHandle>("\"org.example.a\"").is_err());
        assert!(matches!(
            parse("org.example.a"),
            Err(HandleError::NoSlash { .. })
        ));
        assert!(matches!(
            parse("npub1xyz/org.example.a"),
            Err(HandleError::BadKey { key, .. }) if key == "npub1xyz"
        ));
        assert!(matches!(
            parse(&format!("{}/Not An Id", k.to_hex())),
            Err(HandleError::BadAppId { app_id, .. }) if app_id == "Not An Id"
        ));
    }
}
