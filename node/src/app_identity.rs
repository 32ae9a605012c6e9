//! Who an app belongs to, and where its data lives.
//!
//! An app id is chosen by whoever publishes the app, so two sources can pick the same
//! one: the signed catalog's `org.example.notes` and a stranger's marketplace app
//! `npub1…/org.example.notes`. An installed app is therefore known by its owner as well
//! as its id: its volumes and secrets live in `<data>/apps/<owner>/<id>`, where the
//! owner is `catalog` or the developer's npub. One id runs at most once on a node;
//! installing an id that another owner holds is refused ([`claim`]), and with
//! `--replace` the newcomer starts with fresh data while the previous owner's data stays
//! where it was until the operator purges it.
//!
//! ```
//! use archy_node::app_identity::{claim, AppOwner, Claim};
//!
//! let catalog = AppOwner::Catalog;
//! let developer = nostr_sdk::Keys::generate().public_key();
//! let stranger = AppOwner::publisher(&developer);
//! let taken = claim("org.example.notes", Some(&catalog), &stranger, false).unwrap_err();
//! assert!(taken.to_string().contains("the signed catalog"));
//! assert_eq!(
//!     claim("org.example.notes", Some(&catalog), &stranger, true).unwrap(),
//!     Claim::Replace { previous: catalog },
//! );
//! ```

use std::{
    fmt,
    path::{Path, PathBuf},
};

use archy_discovery::market::AppHandle;

/// Who an installed app belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppOwner {
    /// The node's signed catalog.
    Catalog,
    /// A marketplace developer, by their key (as an npub, the same for either spelling).
    Publisher { npub: String },
}

impl AppOwner {
    /// The marketplace developer with key `key`.
    pub fn publisher(key: &nostr_sdk::PublicKey) -> Self {
        AppOwner::Publisher {
            npub: archy_discovery::index::npub(key),
        }
    }

    /// The directory under `<data>/apps` that holds this owner's apps.
    pub fn dir_name(&self) -> &str {
        match self {
            AppOwner::Catalog => "catalog",
            AppOwner::Publisher { npub } => npub,
        }
    }
}

impl AppOwner {
    /// The key of app `id`'s block of host ids: the id alone for catalog apps (as
    /// before owners existed), `<npub>/<id>` for a developer's.
    pub fn id_block(&self, id: &str) -> String {
        match self {
            AppOwner::Catalog => id.to_string(),
            AppOwner::Publisher { npub } => format!("{npub}/{id}"),
        }
    }

    /// The owner whose directory is `name` (as the API reports owners).
    pub fn from_dir_name(name: &str) -> Self {
        match name {
            "catalog" => AppOwner::Catalog,
            npub => AppOwner::Publisher {
                npub: npub.to_string(),
            },
        }
    }
}

impl fmt::Display for AppOwner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AppOwner::Catalog => f.write_str("the signed catalog"),
            AppOwner::Publisher { npub } => write!(f, "marketplace developer {npub}"),
        }
    }
}

/// A marketplace handle `PUBKEY/APP_ID` read as the owner it names.
impl From<&AppHandle> for AppOwner {
    fn from(handle: &AppHandle) -> Self {
        AppOwner::publisher(&handle.developer)
    }
}

/// What installing an app does to the id it asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// Nobody holds the id.
    New,
    /// The same owner holds it: an update or a re-install.
    Same,
    /// Another owner holds it and the operator asked to replace that app.
    Replace { previous: AppOwner },
}

/// An install refused because another owner holds the id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{id} is already installed from {holder}, and this is a different app from {newcomer} \
     with the same id; pass --replace to uninstall the installed one (its data is kept) \
     and install this one with fresh data"
)]
pub struct IdTaken {
    pub id: String,
    pub holder: AppOwner,
    pub newcomer: AppOwner,
}

/// Decides whether `newcomer` may install `id`, given who holds it now.
pub fn claim(
    id: &str,
    holder: Option<&AppOwner>,
    newcomer: &AppOwner,
    replace: bool,
) -> Result<Claim, IdTaken> {
    match holder {
        None => Ok(Claim::New),
        Some(h) if h == newcomer => Ok(Claim::Same),
        Some(h) if replace => Ok(Claim::Replace {
            previous: h.clone(),
        }),
        Some(h) => Err(IdTaken {
            id: id.to_string(),
            holder: h.clone(),
            newcomer: newcomer.clone(),
        }),
    }
}

/// `<data>/apps/<owner>/<id>`: the app's volumes and secrets.
pub fn data_dir(data: &Path, owner: &AppOwner, id: &str) -> PathBuf {
    data.join("apps").join(owner.dir_name()).join(id)
}

/// Every data dir kept for `id`, whoever owned it: what `uninstall --purge` removes.
pub fn all_data_dirs(data: &Path, id: &str) -> Vec<PathBuf> {
    let apps = data.join("apps");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&apps)
        .into_iter()
        .flatten()
        .flatten()
        .map(|owner| owner.path().join(id))
        .filter(|d| d.is_dir())
        .collect();
    dirs.sort();
    dirs
}

/// Moves data from the layout before owners (`<data>/apps/<id>`) to the owner's dir.
/// App ids always hold a dot and owner dirs never do, so the two cannot be confused.
/// Returns what was moved.
pub fn migrate_unowned(
    data: &Path,
    apps: impl IntoIterator<Item = (String, AppOwner)>,
) -> std::io::Result<Vec<PathBuf>> {
    let mut moved = Vec::new();
    for (id, owner) in apps {
        let old = data.join("apps").join(&id);
        let new = data_dir(data, &owner, &id);
        if old.is_dir() && !new.exists() {
            std::fs::create_dir_all(new.parent().unwrap_or(data))?;
            std::fs::rename(&old, &new)?;
            moved.push(new);
        }
    }
    Ok(moved)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publisher(seed: u8) -> AppOwner {
        let keys = nostr_sdk::Keys::new(nostr_sdk::SecretKey::from_slice(&[seed; 32]).unwrap());
        AppOwner::publisher(&keys.public_key())
    }

    #[test]
    fn one_owner_per_id() {
        let (cat, a, b) = (AppOwner::Catalog, publisher(1), publisher(2));
        let id = "org.example.a";
        // (holder, newcomer, replace) -> outcome
        assert_eq!(claim(id, None, &a, false), Ok(Claim::New));
        assert_eq!(claim(id, None, &cat, true), Ok(Claim::New));
        assert_eq!(claim(id, Some(&a), &a, false), Ok(Claim::Same));
        assert_eq!(claim(id, Some(&cat), &cat, true), Ok(Claim::Same));
        for (holder, newcomer) in [(&cat, &a), (&a, &cat), (&a, &b)] {
            let e = claim(id, Some(holder), newcomer, false).unwrap_err();
            let text = e.to_string();
            assert!(
                text.contains(&holder.to_string()) && text.contains(&newcomer.to_string()),
                "names both: {text}"
            );
            assert_eq!(
                claim(id, Some(holder), newcomer, true),
                Ok(Claim::Replace {
                    previous: holder.clone()
                })
            );
        }
    }

    #[test]
    fn hex_and_npub_spellings_are_one_owner() {
        let keys = nostr_sdk::Keys::generate();
        let owner = |handle: String| AppOwner::from(&handle.parse::<AppHandle>().unwrap());
        let hex = owner(format!("{}/org.x.y", keys.public_key().to_hex()));
        let npub = owner(format!(
            "{}/org.x.y",
            archy_discovery::index::npub(&keys.public_key())
        ));
        assert_eq!(hex, npub);
        assert!(hex.dir_name().starts_with("npub1"));
        assert_eq!(AppOwner::from_dir_name(hex.dir_name()), hex);
        assert_eq!(AppOwner::from_dir_name("catalog"), AppOwner::Catalog);
    }

    #[test]
    fn data_is_namespaced_by_owner_and_old_data_moves_once() {
        let d = tempfile::tempdir().unwrap();
        let a = publisher(3);
        assert_ne!(
            data_dir(d.path(), &AppOwner::Catalog, "org.x.y"),
            data_dir(d.path(), &a, "org.x.y")
        );
        std::fs::create_dir_all(d.path().join("apps/org.x.y/secrets")).unwrap();
        std::fs::write(d.path().join("apps/org.x.y/secrets/K"), "v").unwrap();
        let moved =
            migrate_unowned(d.path(), [("org.x.y".to_string(), AppOwner::Catalog)]).unwrap();
        let new = data_dir(d.path(), &AppOwner::Catalog, "org.x.y");
        assert_eq!(moved, vec![new.clone()]);
        assert_eq!(std::fs::read_to_string(new.join("secrets/K")).unwrap(), "v");
        // Nothing left to move; a second run changes nothing.
        assert!(
            migrate_unowned(d.path(), [("org.x.y".to_string(), AppOwner::Catalog)])
                .unwrap()
                .is_empty()
        );
        std::fs::create_dir_all(data_dir(d.path(), &a, "org.x.y")).unwrap();
        std::fs::create_dir_all(data_dir(d.path(), &a, "org.other.app")).unwrap();
        assert_eq!(all_data_dirs(d.path(), "org.x.y").len(), 2);
    }
}
