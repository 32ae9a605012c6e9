//! `catalog build`: an unsigned catalog of every manifest under a directory, and
//! optionally the image archives laid out for an origin to serve.

use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::Context;
use archy_catalog::build::{self, BuiltRelease};
use clap::Subcommand;
use serde_json::json;

use crate::{docfile, report::Report};

#[derive(Debug, Subcommand)]
pub enum CatalogCommand {
    /// Build an unsigned catalog from every manifest (*.yaml, *.yml, *.json) under a directory.
    ///
    /// Each manifest is validated; its image (a path relative to the manifest) is hashed
    /// with BLAKE3 and inspected for its OCI config digest. Every problem in every file
    /// is reported.
    Build {
        /// Directory of manifests (searched recursively).
        #[arg(long)]
        apps: PathBuf,
        /// Catalog version; must grow with every new catalog.
        #[arg(long)]
        version: u64,
        /// Validity, e.g. 30d.
        #[arg(long, default_value = "30d")]
        expires: String,
        #[arg(long)]
        out: PathBuf,
        /// Also copy every image archive to DIR/<blake3 hex>, ready for an origin to serve,
        /// with its hash tree at DIR/<blake3 hex>.obao (for web seeds).
        #[arg(long)]
        blobs: Option<PathBuf>,
        /// Name BASE/<blake3 hex> as every image's web seed: upload the --blobs dir (archives
        /// and their .obao hash trees) to any static host or CDN at BASE, and nodes fetch
        /// ranges from it next to their peers (checking every byte against the signed
        /// hash).
        #[arg(long, value_name = "BASE")]
        web_seed_base: Option<String>,
    },
}

pub fn run(cmd: CatalogCommand) -> anyhow::Result<Report> {
    match cmd {
        CatalogCommand::Build {
            apps,
            version,
            expires,
            out,
            blobs,
            web_seed_base,
        } => build(
            &apps,
            version,
            &expires,
            &out,
            blobs.as_deref(),
            web_seed_base.as_deref(),
        ),
    }
}

fn build(
    apps: &Path,
    version: u64,
    expires: &str,
    out: &Path,
    blobs: Option<&Path>,
    web_seed_base: Option<&str>,
) -> anyhow::Result<Report> {
    let expires = docfile::expiry(expires)?;
    let mut built = match build::build_catalog(apps, version, expires) {
        Ok(b) => b,
        Err(e) => {
            return Ok(Report::refused(
                json!({"problems": e.problems}),
                e.to_string(),
            ))
        }
    };
    if let Some(base) = web_seed_base {
        let base = base.trim_end_matches('/');
        for release in built
            .catalog
            .apps
            .values_mut()
            .flat_map(|a| a.releases.values_mut())
        {
            let url = format!("{base}/{}", release.image.hash.to_hex());
            archy_catalog::documents::check_web_seed(&url)
                .map_err(|e| anyhow::anyhow!("--web-seed-base: {e}"))?;
            release.image.web_seeds = vec![url];
        }
    }
    let bytes = docfile::write_unsigned(&built.catalog, out)?;
    if let Some(dir) = blobs {
        copy_blobs(dir, &built.releases)?;
    }
    let mut text = String::new();
    for r in &built.releases {
        text += &format!(
            "  {}@{}  {}  {} bytes\n",
            r.id, r.version, r.image.hash, r.image.size
        );
    }
    text += &format!(
        "wrote {} (catalog v{version}, {} app(s), {} release(s), unsigned)",
        out.display(),
        built.catalog.apps.len(),
        built.releases.len()
    );
    Ok(Report::done(
        json!({
            "out": out,
            "role": "catalog",
            "version": version,
            "expires": expires,
            "signed": false,
            "size": bytes.len(),
            "apps": built.catalog.apps.len(),
            "releases": built.releases,
            "blobs": blobs,
        }),
        text,
    ))
}

/// Copies each release's image archive to `dir/<blake3 hex>` unless it is there.
/// Copies every release's archive to `dir/<hex>` and writes its hash tree to
/// `dir/<hex>.obao` (what a web seed serves so nodes can verify ranges).
fn copy_blobs(dir: &Path, releases: &[BuiltRelease]) -> anyhow::Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    for r in releases {
        let dest = dir.join(r.image.hash.to_hex());
        if !dest.exists() {
            let tmp = dir.join(format!(".{}.tmp", r.image.hash.to_hex()));
            fs::copy(&r.image_file, &tmp)
                .with_context(|| format!("cannot copy {}", r.image_file.display()))?;
            fs::rename(&tmp, &dest)
                .with_context(|| format!("cannot move {} into place", dest.display()))?;
        }
        let tree = dir.join(format!(
            "{}{}",
            r.image.hash.to_hex(),
            archy_catalog::hash_tree::SUFFIX
        ));
        if !tree.exists() {
            let (hash, _, bytes) = archy_catalog::hash_tree::hash_tree_of_file(&dest)
                .with_context(|| format!("cannot hash {}", dest.display()))?;
            anyhow::ensure!(
                hash == r.image.hash,
                "{} changed while it was copied ({hash}, not {})",
                dest.display(),
                r.image.hash
            );
            archy_catalog::fsutil::write_atomic(&tree, &bytes)
                .with_context(|| format!("cannot write {}", tree.display()))?;
        }
    }
    Ok(())
}
