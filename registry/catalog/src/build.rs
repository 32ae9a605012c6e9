//! Building an (unsigned) catalog from a directory of manifests.
//!
//! `catalog-signer catalog build` and `archy demo` both use this: every `*.yaml`,
//! `*.yml` and `*.json` file under the directory is a manifest; each is validated, its
//! image archive (a path relative to the manifest) is hashed with BLAKE3 and inspected
//! for its config digest, and the manifest's `container.image` becomes the hash. All
//! problems in all files are reported together.

use std::{
    collections::BTreeMap,
    fmt, fs,
    path::{Path, PathBuf},
};

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::{
    documents::{AppEntry, Catalog, ImageRef, Release, Role, SPEC_VERSION},
    manifest::{self, ManifestError, ManifestFormat},
    oci, ContentHash,
};

/// One release that went into the catalog, with where it came from.
#[derive(Debug, Clone, Serialize)]
pub struct BuiltRelease {
    pub id: String,
    pub version: String,
    pub manifest_file: PathBuf,
    pub image_file: PathBuf,
    pub image: ImageRef,
}

/// A built catalog and the files it came from.
#[derive(Debug, Clone)]
pub struct BuiltCatalog {
    pub catalog: Catalog,
    pub releases: Vec<BuiltRelease>,
}

/// One problem in one file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BuildProblem {
    pub file: PathBuf,
    pub message: String,
}

/// Why the build failed: every problem found, by file.
#[derive(Debug, Clone, thiserror::Error)]
pub struct BuildError {
    pub problems: Vec<BuildProblem>,
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "catalog build failed ({} problem(s))",
            self.problems.len()
        )?;
        for p in &self.problems {
            write!(
                f,
                "\n  {}: {}",
                p.file.display(),
                p.message.replace('\n', "\n    ")
            )?;
        }
        Ok(())
    }
}

/// Lists manifest files under `dir`, recursively, in sorted order.
pub fn manifest_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d)? {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
            } else if matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml" | "json")
            ) {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Builds a catalog of every manifest under `apps_dir`.
pub fn build_catalog(
    apps_dir: &Path,
    version: u64,
    expires: DateTime<Utc>,
) -> Result<BuiltCatalog, BuildError> {
    let one = |file: &Path, message: String| BuildError {
        problems: vec![BuildProblem {
            file: file.to_path_buf(),
            message,
        }],
    };
    let files = manifest_files(apps_dir).map_err(|e| one(apps_dir, e.to_string()))?;
    if files.is_empty() {
        return Err(one(
            apps_dir,
            "no manifests (*.yaml, *.yml, *.json) found".into(),
        ));
    }
    let mut problems = Vec::new();
    let mut releases: Vec<BuiltRelease> = Vec::new();
    let mut apps: BTreeMap<String, AppEntry> = BTreeMap::new();
    for file in files {
        match build_release(&file) {
            Ok((release, built)) => {
                if let Some(prev) = releases
                    .iter()
                    .find(|r| r.id == built.id && r.version == built.version)
                {
                    problems.push(BuildProblem {
                        file: file.clone(),
                        message: format!(
                            "{}@{} is also defined in {}",
                            built.id,
                            built.version,
                            prev.manifest_file.display()
                        ),
                    });
                    continue;
                }
                apps.entry(built.id.clone())
                    .or_default()
                    .releases
                    .insert(built.version.clone(), Box::new(release));
                releases.push(built);
            }
            Err(e) => problems.push(BuildProblem {
                file,
                message: e.to_string(),
            }),
        }
    }
    if !problems.is_empty() {
        return Err(BuildError { problems });
    }
    Ok(BuiltCatalog {
        catalog: Catalog {
            role: Role::Catalog,
            spec_version: SPEC_VERSION,
            version,
            expires,
            apps,
        },
        releases,
    })
}

/// Why one manifest file could not become a release.
#[derive(Debug, thiserror::Error)]
pub enum BuildReleaseError {
    #[error("cannot read: {0}")]
    Read(#[source] std::io::Error),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(transparent)]
    Image(#[from] ResolveImageError),
}

/// Validates one manifest file and resolves its image.
pub fn build_release(file: &Path) -> Result<(Release, BuiltRelease), BuildReleaseError> {
    let text = fs::read_to_string(file).map_err(BuildReleaseError::Read)?;
    let mut m = manifest::parse_and_validate(&text, ManifestFormat::from_path(file))?;
    let (image_file, image) = resolve_image(file, &m.container.image)?;
    m.container.image = image.hash.to_string();
    let built = BuiltRelease {
        id: m.id.clone(),
        version: m.version.clone(),
        manifest_file: file.to_path_buf(),
        image_file,
        image: image.clone(),
    };
    let release = Release {
        manifest_hash: m.manifest_hash(),
        manifest: m,
        image,
    };
    Ok((release, built))
}

/// Why the image archive a manifest names could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ResolveImageError {
    #[error("app.container.image is already a hash ({0}); give the path of the OCI archive so it can be hashed and inspected")]
    AlreadyAHash(ContentHash),
    #[error("app.container.image: image archive {} does not exist", .0.display())]
    Missing(PathBuf),
    #[error("app.container.image: {0}")]
    Hash(#[source] oci::OciError),
    #[error("app.container.image: {}: {source}", path.display())]
    Inspect {
        path: PathBuf,
        source: oci::OciError,
    },
}

/// Finds, hashes and inspects the image archive a manifest names (relative to it).
pub fn resolve_image(
    manifest_file: &Path,
    image: &str,
) -> Result<(PathBuf, ImageRef), ResolveImageError> {
    if let Ok(hash) = image.parse::<ContentHash>() {
        return Err(ResolveImageError::AlreadyAHash(hash));
    }
    let base = manifest_file.parent().unwrap_or(Path::new("."));
    let path = base.join(image);
    if !path.is_file() {
        return Err(ResolveImageError::Missing(path));
    }
    let (hash, size) = oci::hash_file(&path).map_err(ResolveImageError::Hash)?;
    let info = match oci::inspect(&path) {
        Ok(info) => info,
        Err(source) => return Err(ResolveImageError::Inspect { path, source }),
    };
    Ok((
        path,
        ImageRef {
            hash,
            size,
            config_digest: info.config_digest,
            format: info.format,
            web_seeds: Vec::new(),
        },
    ))
}
