//! The BLAKE3 hash tree of a blob, as a web seed serves it next to the blob.
//!
//! A plain HTTP host carries no proof, so a node cannot check a byte range it gets from
//! one against the signed hash without the hashes of the tree above that range. A web
//! seed therefore serves the blob's hash tree at `<url>.obao`: bao-tree's pre-order
//! outboard, no size prefix, with 16 KiB chunk groups (the groups iroh-blobs stores
//! and verifies), about 1/256 of the blob. Its size follows from the blob's signed size
//! ([`hash_tree_size`]), so a node knows how much to read before it asks.
//!
//! ```
//! let blob = vec![1u8; 100_000];
//! let (hash, tree) = archy_catalog::hash_tree::hash_tree(&blob[..], blob.len() as u64).unwrap();
//! assert_eq!(hash, archy_catalog::ContentHash::of(&blob));
//! assert_eq!(tree.len() as u64, archy_catalog::hash_tree::hash_tree_size(100_000));
//! ```

use std::io;

use bao_tree::{
    io::{outboard::PreOrderOutboard, sync::CreateOutboard},
    BaoTree, BlockSize,
};

use crate::ContentHash;

/// Chunk groups of 16 chunks (16 KiB): iroh-blobs' `IROH_BLOCK_SIZE`.
pub const BLOCK_SIZE: BlockSize = BlockSize::from_chunk_log(4);

/// What is appended to a web seed's URL to name its hash tree.
pub const SUFFIX: &str = ".obao";

/// The URL of the hash tree that goes with the web seed `url`.
pub fn hash_tree_url(url: &str) -> String {
    format!("{url}{SUFFIX}")
}

/// The BLAKE3 hash of `size` bytes read from `data`, and their hash tree.
pub fn hash_tree(data: impl io::Read, size: u64) -> io::Result<(ContentHash, Vec<u8>)> {
    let tree = PreOrderOutboard::<Vec<u8>>::create_sized(data, size, BLOCK_SIZE)?;
    Ok((ContentHash(*tree.root.as_bytes()), tree.data))
}

/// The hash tree of the file at `path`, with its hash and size.
pub fn hash_tree_of_file(path: &std::path::Path) -> io::Result<(ContentHash, u64, Vec<u8>)> {
    let file = std::fs::File::open(path)?;
    let size = file.metadata()?.len();
    let (hash, tree) = hash_tree(io::BufReader::with_capacity(1 << 20, file), size)?;
    Ok((hash, size, tree))
}

/// The size of the hash tree of a blob of `size` bytes.
pub fn hash_tree_size(size: u64) -> u64 {
    BaoTree::new(size, BLOCK_SIZE).outboard_size()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_hash_tree_has_the_size_the_blob_size_gives() {
        for size in [0u64, 1, 16384, 16385, 1 << 20, (1 << 20) + 7] {
            let data = vec![7u8; size as usize];
            let (hash, tree) = hash_tree(&data[..], size).unwrap();
            assert_eq!(hash, ContentHash::of(&data));
            assert_eq!(tree.len() as u64, hash_tree_size(size), "size {size}");
        }
    }
}
