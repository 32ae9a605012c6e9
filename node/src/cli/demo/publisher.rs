//! The publisher's steps of the demo: example images packed from the host's busybox,
//! keys, a root of trust, a signed catalog and timestamp, and a check of all of it as
//! a node checks it.

use std::{fs, path::Path};

use anyhow::{bail, Context};
use archy_catalog::{
    keys::SecretKey,
    oci,
    publisher::{Publisher, Validity},
    Limits, TrustedState,
};
use chrono::Utc;

use super::Ctx;

pub(super) const BUSYBOX: &str = "/bin/busybox";

/// The example apps shipped in the repository's `examples/`.
const EXAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples");

/// Packs each example's image (the host's static busybox plus the example's `www/`) and
/// copies its manifest next to it, so no registry and no engine is needed.
pub(super) fn make_example_images(dir: &Path) -> anyhow::Result<String> {
    if !Path::new(BUSYBOX).exists() {
        bail!("{BUSYBOX} not found: install it with `apt-get install busybox-static`");
    }
    let examples = Path::new(EXAMPLES);
    let mut made = Vec::new();
    for entry in fs::read_dir(examples)
        .with_context(|| format!("cannot read the examples in {}", examples.display()))?
    {
        let src = entry?.path();
        if !src.join("app.yaml").exists() {
            continue;
        }
        let name = src
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("app")
            .to_string();
        let out = dir.join("apps").join(&name);
        let rootfs = dir.join("rootfs").join(&name);
        fs::create_dir_all(rootfs.join("bin"))?;
        fs::create_dir_all(rootfs.join("www"))?;
        fs::create_dir_all(&out)?;
        fs::copy(BUSYBOX, rootfs.join("bin/busybox")).context("copy busybox")?;
        for f in fs::read_dir(src.join("www"))? {
            let f = f?.path();
            if let Some(n) = f.file_name() {
                fs::copy(&f, rootfs.join("www").join(n))?;
            }
        }
        let packed = oci::pack_rootfs(
            &rootfs,
            &out.join("image.oci.tar"),
            &oci::PackOptions::default(),
        )?;
        fs::copy(src.join("app.yaml"), out.join("app.yaml"))?;
        made.push(format!("{name} ({} KiB)", packed.size / 1024));
    }
    made.sort();
    Ok(made.join(", "))
}

/// Fresh keys for every role (two root keys, both needed to sign a root), written to
/// `<dir>/keys` as an offline publisher keeps them; the publisher signs with them next.
pub(super) fn make_keys_and_root(c: &mut Ctx) -> anyhow::Result<String> {
    let keys_dir = c.dir.join("keys");
    fs::create_dir_all(&keys_dir)?;
    let root_keys = vec![SecretKey::generate()?, SecretKey::generate()?];
    let publisher = Publisher::generate()?.with_root_keys(root_keys, 2);
    for (name, key) in [
        ("root1", &publisher.root_keys()[0]),
        ("root2", &publisher.root_keys()[1]),
        ("catalog", publisher.catalog_key()),
        ("timestamp", publisher.timestamp_key()),
    ] {
        key.write_pair(&keys_dir.join(name))?;
    }
    let short = publisher.root_keys()[0].key_id().short();
    c.publisher = Some(publisher);
    Ok(format!("root v1, root key {short}"))
}

/// The catalog of the example apps and a timestamp pinning it, signed into
/// `<dir>/publish` with each image under `blobs/`, as the origin serves it.
pub(super) fn build_and_sign_catalog(c: &mut Ctx) -> anyhow::Result<String> {
    let publisher = c.publisher.as_ref().context("no publisher keys")?;
    let published = publisher.publish(
        &c.dir.join("apps"),
        &c.dir.join("publish"),
        1,
        &Validity::default(),
    )?;
    Ok(format!(
        "catalog v1: {} app(s), {} bytes, signed; timestamp v1 pins it",
        published.apps,
        published.catalog.len()
    ))
}

pub(super) fn verify_as_node(dir: &Path) -> anyhow::Result<String> {
    let publish = dir.join("publish");
    let read = |n: &str| fs::read(publish.join(n)).with_context(|| format!("read {n}"));
    let limits = Limits::default();
    let mut state = TrustedState::bootstrap(&read("root.json")?, &limits)?;
    let ts = state.verify_timestamp(&read("timestamp.json")?, Utc::now(), &limits)?;
    let catalog = state.verify_catalog(&read("catalog.json")?, Some(&ts), Utc::now(), &limits)?;
    let problems = catalog.check_releases();
    if let Some((at, why)) = problems.first() {
        bail!("{at}: {why}");
    }
    for entry in catalog.apps.values() {
        for release in entry.releases.values() {
            let (hash, size) =
                oci::hash_file(&publish.join("blobs").join(release.image.hash.to_hex()))?;
            if hash != release.image.hash || size != release.image.size {
                bail!(
                    "image blob of {} does not match the catalog",
                    release.manifest.id
                );
            }
        }
    }
    Ok(format!(
        "timestamp v{}, catalog v{}: {} apps, every image verified",
        ts.version,
        catalog.version,
        catalog.apps.len()
    ))
}
