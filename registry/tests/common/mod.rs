//! Helpers the swarm tests share: nodes on 127.0.0.1 and random blobs to move.

#![allow(dead_code, clippy::unwrap_used)] // each test binary uses a part; tests fail loudly

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

use archy_catalog::{oci::hash_file, ContentHash};
use archy_registry::SwarmNode;

/// Any free port on loopback.
pub fn local() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// `<dir>/blob.bin` with `size` random bytes; its path, BLAKE3 hash and size.
pub fn random_file(dir: &Path, size: u64) -> (PathBuf, ContentHash, u64) {
    let mut bytes = vec![0u8; size as usize];
    getrandom::fill(&mut bytes).unwrap();
    let p = dir.join("blob.bin");
    std::fs::write(&p, bytes).unwrap();
    let (h, s) = hash_file(&p).unwrap();
    (p, h, s)
}

/// A swarm node with its data in `<dir>/<name>`.
pub async fn node(dir: &Path, name: &str) -> SwarmNode {
    SwarmNode::spawn(&dir.join(name), local()).await.unwrap()
}

/// A node that holds `file` (and so serves it).
pub async fn provider(dir: &Path, name: &str, file: &Path) -> SwarmNode {
    let n = node(dir, name).await;
    n.import(file).await.unwrap();
    n
}
