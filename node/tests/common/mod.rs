//! Helpers the runtime tests share: an image archive made from the host's static
//! busybox, as `archy app pack` makes one, without any engine.

#![allow(dead_code, clippy::unwrap_used)] // each test binary uses a part; tests fail loudly

use std::{
    fs,
    path::{Path, PathBuf},
};

use archy_catalog::{build::resolve_image, manifest, oci, AppManifest, ImageRef};

/// Packs `<dir>/rootfs` (`/bin/busybox` and `/www/index.html` with `page`) into
/// `<dir>/img.oci.tar`, the image the tests' manifests name as `./img.oci.tar`.
pub fn busybox_image(dir: &Path, page: &str) {
    let rootfs = dir.join("rootfs");
    fs::create_dir_all(rootfs.join("bin")).unwrap();
    fs::create_dir_all(rootfs.join("www")).unwrap();
    fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
    fs::write(rootfs.join("www/index.html"), page).unwrap();
    oci::pack_rootfs(
        &rootfs,
        &dir.join("img.oci.tar"),
        &oci::PackOptions::default(),
    )
    .unwrap();
}

/// Writes `text` as `<dir>/app.yaml`, validates it and resolves its image archive; the
/// manifest comes back naming the image by hash, as a catalog holds it.
pub fn manifest_with_image(dir: &Path, text: &str) -> (AppManifest, PathBuf, ImageRef) {
    fs::write(dir.join("app.yaml"), text).unwrap();
    let mut m = manifest::parse_and_validate(text, manifest::ManifestFormat::Yaml).unwrap();
    let (archive, image) = resolve_image(&dir.join("app.yaml"), &m.container.image).unwrap();
    m.container.image = image.hash.to_string();
    (m, archive, image)
}
