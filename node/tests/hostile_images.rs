//! Hostile images against the process runtime's unpacking and image identity: each test
//! builds a real archive the way an attacker would (a symlink out of the rootfs and a
//! whiteout or file through it, hardlinks to host files, absolute and `..` paths, device
//! nodes, setuid binaries, a gzip bomb, a million entries, a config copied from another
//! image over other layers), loads it with `ProcessRuntime::load_image` as root, and
//! asserts that a canary on the host is untouched and that the refusal names the cause.
//! Listed in docs/security.md.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod common;

use std::{
    fs,
    io::Write,
    os::unix::fs::{MetadataExt, PermissionsExt},
    path::PathBuf,
    time::{Duration, Instant},
};

use archy_catalog::{oci::ArchiveFormat, ContentHash, ImageRef};
use archy_node::runtime::{
    process::{ProcessRuntime, UnpackLimits},
    Runtime, RuntimeError,
};
use sha2::{Digest, Sha256};

/// One entry of a test layer.
enum E<'a> {
    File(&'a str, &'a [u8], u32),
    Dir(&'a str),
    Symlink(&'a str, &'a str),
    Hardlink(&'a str, &'a str),
    Device(&'a str),
}

fn layer(entries: &[E<'_>]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_gnu();
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_size(0);
        h.set_mode(0o755);
        // `append_data` refuses `..` and absolute paths: the attacker writes raw names.
        let (path, data): (&str, &[u8]) = match e {
            E::File(p, c, mode) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(c.len() as u64);
                h.set_mode(*mode);
                (p, c)
            }
            E::Dir(p) => {
                h.set_entry_type(tar::EntryType::Directory);
                (p, &[])
            }
            E::Symlink(p, to) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_link_name_literal(to).unwrap();
                (p, &[])
            }
            E::Hardlink(p, to) => {
                h.set_entry_type(tar::EntryType::Link);
                h.set_link_name_literal(to).unwrap();
                (p, &[])
            }
            E::Device(p) => {
                h.set_entry_type(tar::EntryType::Block);
                h.set_device_major(8).unwrap();
                h.set_device_minor(0).unwrap();
                (p, &[])
            }
        };
        let name = &mut h.as_old_mut().name;
        name.fill(0);
        name[..path.len()].copy_from_slice(path.as_bytes());
        h.set_cksum();
        b.append(&h, data).unwrap();
    }
    b.into_inner().unwrap()
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

/// An oci-archive of `blobs` (as stored) whose config lists `diff_ids`; returns the
/// archive and its config digest.
fn archive(blobs: &[Vec<u8>], diff_ids: &[String]) -> (Vec<u8>, String) {
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": { "Cmd": ["/bin/true"] },
        "rootfs": { "type": "layers", "diff_ids": diff_ids },
    }))
    .unwrap();
    let layers: Vec<_> = blobs
        .iter()
        .map(|b| serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": sha256(b), "size": b.len()}))
        .collect();
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256(&config), "size": config.len()},
        "layers": layers,
    }))
    .unwrap();
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": sha256(&manifest), "size": manifest.len()}],
    }))
    .unwrap();
    let mut ar = tar::Builder::new(Vec::new());
    let mut add = |path: String, bytes: &[u8]| {
        let mut h = tar::Header::new_ustar();
        h.set_mode(0o644);
        h.set_size(bytes.len() as u64);
        ar.append_data(&mut h, path, bytes).unwrap();
    };
    let blob = |d: &str| format!("blobs/sha256/{}", d.trim_start_matches("sha256:"));
    add("oci-layout".into(), br#"{"imageLayoutVersion":"1.0.0"}"#);
    for b in blobs {
        add(blob(&sha256(b)), b);
    }
    add(blob(&sha256(&config)), &config);
    add(blob(&sha256(&manifest)), &manifest);
    add("index.json".into(), &index);
    (ar.into_inner().unwrap(), sha256(&config))
}

/// An archive of plain layers with correct diff_ids.
fn image_of(layers: &[Vec<u8>]) -> (Vec<u8>, String) {
    let ids: Vec<String> = layers.iter().map(|l| sha256(l)).collect();
    archive(layers, &ids)
}

/// A runtime in a fresh dir, and a canary dir on the host with one file.
struct Scene {
    dir: tempfile::TempDir,
    rt: ProcessRuntime,
    canary: PathBuf,
}

impl Scene {
    fn new() -> Option<Scene> {
        if !common::can_run(common::needs_root()) {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let canary = dir.path().join("host/canary");
        fs::create_dir_all(&canary).unwrap();
        fs::write(canary.join("victim"), "untouched").unwrap();
        let rt = ProcessRuntime::new("t", dir.path().join("process"), "/bin/false");
        Some(Scene { dir, rt, canary })
    }

    fn with_limits(mut self, limits: UnpackLimits) -> Self {
        self.rt = self.rt.with_unpack_limits(limits);
        self
    }

    /// Loads `bytes` as an image whose signed hash is its BLAKE3.
    fn load(&self, bytes: &[u8], config_digest: &str) -> (ImageRef, Result<(), RuntimeError>) {
        let path = self.dir.path().join("image.tar");
        fs::write(&path, bytes).unwrap();
        let image = ImageRef {
            hash: ContentHash::of(bytes),
            size: bytes.len() as u64,
            config_digest: config_digest.to_string(),
            format: ArchiveFormat::OciArchive,
            web_seeds: Vec::new(),
        };
        let r = self.rt.load_image(&path, &image);
        (image, r)
    }

    fn rootfs(&self, image: &ImageRef) -> PathBuf {
        self.rt
            .root()
            .join("images")
            .join(image.hash.to_hex())
            .join("rootfs")
    }

    fn assert_canary(&self) {
        let names: Vec<_> = fs::read_dir(&self.canary)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["victim"], "the host dir was changed");
        assert_eq!(
            fs::read_to_string(self.canary.join("victim")).unwrap(),
            "untouched"
        );
        assert_eq!(fs::metadata(self.canary.join("victim")).unwrap().nlink(), 1);
    }
}

fn refused(r: Result<(), RuntimeError>, cause: &str) -> String {
    let e = r
        .expect_err("the hostile image must be refused")
        .to_string();
    assert!(e.contains(cause), "refusal should name {cause:?}: {e}");
    e
}

#[test]
fn a_symlink_out_and_an_opaque_whiteout_through_it_stay_in_the_rootfs() {
    let Some(s) = Scene::new() else { return };
    let canary = s.canary.to_str().unwrap().to_string();
    let (bytes, config) = image_of(&[layer(&[
        E::Symlink("x", &canary),
        E::File("x/.wh..wh..opq", b"", 0o644),
    ])]);
    let (image, r) = s.load(&bytes, &config);
    r.unwrap();
    s.assert_canary();
    // The symlink resolved inside the rootfs: the opaque dir was made there.
    assert!(fs::symlink_metadata(s.rootfs(&image).join("x"))
        .unwrap()
        .is_symlink());
}

#[test]
fn a_whiteout_through_a_symlink_out_removes_nothing_on_the_host() {
    let Some(s) = Scene::new() else { return };
    let canary = s.canary.to_str().unwrap().to_string();
    let (bytes, config) = image_of(&[layer(&[
        E::Symlink("x", &canary),
        E::File("x/.wh.victim", b"", 0o644),
        E::Symlink("up", "../../../../../../../.."),
        E::File(&format!("up{canary}/.wh.victim"), b"", 0o644),
    ])]);
    s.load(&bytes, &config).1.unwrap();
    s.assert_canary();
}

#[test]
fn files_written_through_a_symlink_land_inside_the_rootfs_in_one_layer_or_the_next() {
    let Some(s) = Scene::new() else { return };
    let canary = s.canary.to_str().unwrap().to_string();
    let pwned = format!("archy-test-pwned-{}", std::process::id());
    let (bytes, config) = image_of(&[
        layer(&[
            E::Dir("etc/"),
            E::Symlink("x", "/etc"),
            E::File(&format!("x/{pwned}"), b"one", 0o644),
            E::Symlink("y", "../../../../../../etc"),
        ]),
        layer(&[E::File(&format!("y/{pwned}.2"), b"two", 0o644)]),
    ]);
    let (image, r) = s.load(&bytes, &config);
    r.unwrap();
    let etc = s.rootfs(&image).join("etc");
    assert_eq!(fs::read_to_string(etc.join(&pwned)).unwrap(), "one");
    assert_eq!(
        fs::read_to_string(etc.join(format!("{pwned}.2"))).unwrap(),
        "two"
    );
    for host in [format!("/etc/{pwned}"), format!("/etc/{pwned}.2")] {
        assert!(
            fs::symlink_metadata(&host).is_err(),
            "{host} written on the host"
        );
    }
    // A symlink to a host dir that the rootfs does not have: refused, host untouched.
    for second_layer in [false, true] {
        let link = layer(&[E::Symlink("x", &canary)]);
        let write = layer(&[E::File("x/victim", b"pwned", 0o644)]);
        let layers = match second_layer {
            false => vec![layer(&[
                E::Symlink("x", &canary),
                E::File("x/victim", b"pwned", 0o644),
            ])],
            true => vec![link, write],
        };
        let (bytes, config) = image_of(&layers);
        let e = refused(s.load(&bytes, &config).1, "symlink to nothing");
        assert!(e.contains("entry x/victim"), "{e}");
        s.assert_canary();
    }
}

#[test]
fn hardlinks_to_host_files_are_refused() {
    let Some(s) = Scene::new() else { return };
    let victim = s.canary.join("victim");
    let victim = victim.to_str().unwrap();
    for (entries, cause) in [
        (vec![E::Hardlink("h", victim)], "absolute path"),
        (
            vec![E::Hardlink("h", "../../../../../../../../etc/hostname")],
            "'..'",
        ),
        (
            vec![
                E::Symlink("x", s.canary.to_str().unwrap()),
                E::Hardlink("h", "x/victim"),
            ],
            "not in the image",
        ),
    ] {
        let (bytes, config) = image_of(&[layer(&entries)]);
        let e = refused(s.load(&bytes, &config).1, cause);
        assert!(e.contains("entry h"), "names the entry: {e}");
        s.assert_canary();
    }
}

#[test]
fn absolute_and_parent_paths_are_refused_with_the_entry_named() {
    let Some(s) = Scene::new() else { return };
    let abs = format!("{}/pwned", s.canary.display());
    for (path, cause) in [
        (abs.as_str(), "absolute path"),
        ("a/../../../../../../pwned", "'..'"),
    ] {
        let (bytes, config) = image_of(&[layer(&[E::File(path, b"x", 0o644)])]);
        let e = refused(s.load(&bytes, &config).1, cause);
        assert!(e.contains(path), "names the entry: {e}");
        s.assert_canary();
    }
}

#[test]
fn device_nodes_are_skipped_and_setuid_bits_cleared() {
    let Some(s) = Scene::new() else { return };
    let (bytes, config) = image_of(&[layer(&[
        E::Dir("bin/"),
        E::File("bin/su", b"#!/bin/sh\n", 0o4755),
        E::File("bin/sg", b"#!/bin/sh\n", 0o2755),
        E::Device("disk"),
    ])]);
    let (image, r) = s.load(&bytes, &config);
    r.unwrap();
    let root = s.rootfs(&image);
    assert!(
        fs::symlink_metadata(root.join("disk")).is_err(),
        "no device node"
    );
    for f in ["bin/su", "bin/sg"] {
        let mode = fs::metadata(root.join(f)).unwrap().permissions().mode();
        assert_eq!(mode & 0o7777, 0o755, "{f}: setuid/setgid cleared");
    }
    // What the runtime keeps is for root alone.
    for d in [
        s.rt.root().join("images"),
        s.rootfs(&image).parent().unwrap().to_path_buf(),
    ] {
        assert_eq!(
            fs::metadata(&d).unwrap().permissions().mode() & 0o777,
            0o700,
            "{}",
            d.display()
        );
    }
}

#[test]
fn a_gzip_bomb_stops_at_the_byte_budget() {
    let Some(s) = Scene::new() else { return };
    let s = s.with_limits(UnpackLimits {
        max_bytes: 16 << 20,
        ..UnpackLimits::default()
    });
    let zeros = vec![0u8; 256 << 20];
    let plain = layer(&[E::File("zeros", &zeros, 0o644)]);
    let diff_id = sha256(&plain);
    let bomb = gzip(&plain);
    drop((zeros, plain));
    assert!(bomb.len() < 2 << 20, "a bomb: {} bytes", bomb.len());
    let (bytes, config) = archive(&[bomb], &[diff_id]);
    let (image, r) = s.load(&bytes, &config);
    refused(r, "max_bytes");
    assert!(
        !s.rootfs(&image).exists(),
        "nothing of a refused image is kept"
    );
}

#[test]
fn a_million_entries_are_refused_by_the_entry_budget_quickly() {
    let Some(s) = Scene::new() else { return };
    // A million directory entries, gzip-compressed to a few MB.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut diff = Sha256::new();
    {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_size(0);
        h.set_mode(0o755);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_path("d/").unwrap();
        h.set_cksum();
        for _ in 0..1_000_000 {
            gz.write_all(h.as_bytes()).unwrap();
            diff.update(h.as_bytes());
        }
        gz.write_all(&[0u8; 1024]).unwrap();
        diff.update([0u8; 1024]);
    }
    let blob = gz.finish().unwrap();
    let diff_id = format!("sha256:{}", hex::encode(diff.finalize()));
    let (bytes, config) = archive(&[blob], &[diff_id]);
    let started = Instant::now();
    let (image, r) = s.load(&bytes, &config);
    refused(r, "max_entries");
    assert!(!s.rootfs(&image).exists());
    // Not a timing assertion on speed, a bound on hanging: the default budget is 500,000.
    assert!(
        started.elapsed() < Duration::from_secs(120),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn an_image_that_copies_another_images_config_over_other_layers_is_refused() {
    let Some(s) = Scene::new() else { return };
    let good = layer(&[E::File("app", b"the catalog's app", 0o755)]);
    let (genuine, config) = image_of(std::slice::from_ref(&good));
    let (genuine_ref, r) = s.load(&genuine, &config);
    r.unwrap();
    // Same config bytes (so the same config digest), another layer.
    let evil = layer(&[E::File("app", b"the attacker's app", 0o755)]);
    let (forged, forged_config) = archive(&[evil], &[sha256(&good)]);
    assert_eq!(forged_config, config, "the config is copied byte for byte");
    let (forged_ref, r) = s.load(&forged, &config);
    refused(r, "is not the config's diff_id");
    assert!(
        !s.rt.image_loaded(&forged_ref).unwrap(),
        "never used for the forged hash"
    );
    assert!(s.rt.image_loaded(&genuine_ref).unwrap());
    assert_eq!(
        fs::read_to_string(s.rootfs(&genuine_ref).join("app")).unwrap(),
        "the catalog's app"
    );
}

#[test]
fn a_layer_whose_diff_id_or_digest_is_wrong_is_refused() {
    let Some(s) = Scene::new() else { return };
    let l = layer(&[E::File("f", b"x", 0o644)]);
    let (bytes, config) = archive(std::slice::from_ref(&l), &[sha256(b"something else")]);
    refused(s.load(&bytes, &config).1, "diff_id");
    // Mismatched counts are refused before anything is unpacked.
    let (bytes, config) = archive(&[l.clone(), l], &[sha256(b"one")]);
    refused(s.load(&bytes, &config).1, "diff_ids");
}

#[test]
fn a_config_digest_in_another_form_is_refused_before_anything_is_read() {
    let Some(s) = Scene::new() else { return };
    let (bytes, _) = image_of(&[layer(&[E::File("f", b"x", 0o644)])]);
    for bad in [
        "latest",
        "sha256:../../etc",
        &format!("sha256:{}", "A".repeat(64)),
    ] {
        refused(s.load(&bytes, bad).1, "not a digest");
    }
}

#[test]
fn a_volume_source_through_a_planted_symlink_is_refused() {
    let Some(s) = Scene::new() else { return };
    let volume = s.dir.path().join("app/volumes/data");
    fs::create_dir_all(&volume).unwrap();
    // What an earlier release of the app could have left in its own volume.
    std::os::unix::fs::symlink(&s.canary, volume.join("h")).unwrap();
    std::os::unix::fs::symlink("/", volume.join("root")).unwrap();
    fs::create_dir_all(volume.join("real/sub")).unwrap();
    std::os::unix::fs::symlink(&s.canary, volume.join("real/sub/link")).unwrap();
    for source in [
        "h",
        "root",
        "h/victim",
        "real/sub/link",
        "real/sub/link/new",
    ] {
        let e = archy_node::runtime::open_volume(&volume, Some(source))
            .expect_err(source)
            .to_string();
        assert!(
            e.contains("symlink") && e.contains("volume data"),
            "{source}: {e}"
        );
    }
    let (_, found) = archy_node::runtime::open_volume(&volume, Some("real/sub/new/dir")).unwrap();
    assert_eq!(found, volume.join("real/sub/new/dir"));
    assert!(found.is_dir());
    s.assert_canary();
}
