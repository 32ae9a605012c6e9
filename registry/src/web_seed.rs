//! Web seeds as providers of ranges: a static HTTP(S) host (a CDN, a bucket, any web
//! server that honours `Range`) next to the swarm's peers.
//!
//! Plain HTTP carries no proof, so a web seed also serves the blob's **hash tree** at
//! `<url>.obao` ([`archy_catalog::hash_tree`]); `catalog-signer catalog build --blobs`
//! and `archy app publish --web-seed` write it for publishers.
//!
//! A fetch asks the seed for the tree once (exactly the size the signed blob size
//! implies, or the seed is lying), then for pieces with `Range` requests. Each piece is
//! encoded with the tree's hashes on the way in and checked against the signed root
//! hash before the store takes it: a wrong byte in the piece, or a wrong hash in the
//! tree, is a lying seed ([`WebSeedFault::is_lie`]), dropped like a peer sending bad
//! data. Nothing a seed sends is stored before it is verified.
//!
//! ```no_run
//! # fn demo(image: &archy_catalog::ImageRef) -> Result<(), archy_registry::web_seed::WebSeedFault> {
//! use std::time::Duration;
//! use archy_registry::web_seed::WebSeed;
//! let seed = WebSeed::open(&image.web_seeds[0], image.hash, image.size,
//!     Duration::from_secs(5), Duration::from_secs(30))?;
//! let first = bao_tree::ChunkRanges::from(..bao_tree::ChunkNum(16));
//! let (encoded, bytes) = seed.verified_range(0..16384.min(image.size), &first)?;
//! println!("{bytes} bytes verified, {} encoded for the store", encoded.len());
//! # Ok(()) }
//! ```

use std::{io, ops::Range, time::Duration};

use archy_catalog::{
    hash_tree::{hash_tree_size, hash_tree_url, BLOCK_SIZE},
    ContentHash,
};
use bao_tree::{
    io::{
        outboard::PreOrderOutboard,
        sync::{encode_ranges_validated, ReadAt},
        EncodeError,
    },
    BaoTree, ChunkRanges,
};

/// Why a web seed gave no verified range.
#[derive(Debug, thiserror::Error)]
pub enum WebSeedFault {
    /// It could not be asked, or answered with an error status.
    #[error("cannot be asked: {0}")]
    Unavailable(#[source] Box<ureq::Error>),
    #[error("the answer broke off: {0}")]
    Read(#[source] io::Error),
    /// It serves the blob but no hash tree, so its ranges cannot be verified.
    #[error("serves no hash tree at {0} (HTTP 404), so none of its ranges can be verified")]
    NoHashTree(String),
    /// It answered a range request with the whole blob, or another status.
    #[error("does not serve byte ranges (HTTP {0} to a range request)")]
    NoRanges(u16),
    /// Its hash tree has another size than the signed blob size gives.
    #[error("sent a hash tree of {got} bytes, not the {want} a blob of the signed size has")]
    HashTreeSize { got: u64, want: u64 },
    /// It sent another number of bytes than the range asked for.
    #[error("sent {got} bytes for a range of {want}")]
    RangeLength { got: u64, want: u64 },
    /// The range, or the tree's hashes, do not match the signed hash.
    #[error("sent bytes that do not match the signed hash: {0}")]
    Mismatch(#[source] EncodeError),
}

impl WebSeedFault {
    /// Whether the seed sent something other than the signed blob (drop it for good),
    /// rather than failed to answer (which may pass).
    pub fn is_lie(&self) -> bool {
        matches!(
            self,
            Self::HashTreeSize { .. } | Self::RangeLength { .. } | Self::Mismatch(_)
        )
    }
}

/// A web seed with its hash tree in hand: serves verified encodings of ranges. Its
/// calls block; a fetch runs them on the blocking pool.
#[derive(Debug)]
pub struct WebSeed {
    url: String,
    hash: ContentHash,
    size: u64,
    tree: Vec<u8>,
    agent: ureq::Agent,
}

impl WebSeed {
    /// Asks `url` for the hash tree of the blob `hash` of `size` bytes (the signed
    /// values). `read_timeout` bounds every read, `total_timeout` every request.
    pub fn open(
        url: &str,
        hash: ContentHash,
        size: u64,
        read_timeout: Duration,
        total_timeout: Duration,
    ) -> Result<Self, WebSeedFault> {
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(read_timeout)
            .timeout_read(read_timeout)
            .timeout(total_timeout)
            .redirects(3)
            .build();
        let tree_url = hash_tree_url(url);
        let want = hash_tree_size(size);
        let response = match agent.get(&tree_url).call() {
            Ok(r) => r,
            Err(ureq::Error::Status(404, _)) => return Err(WebSeedFault::NoHashTree(tree_url)),
            Err(e) => return Err(WebSeedFault::Unavailable(Box::new(e))),
        };
        let tree = read_at_most(response, want)?;
        if tree.len() as u64 != want {
            return Err(WebSeedFault::HashTreeSize {
                got: tree.len() as u64,
                want,
            });
        }
        Ok(Self {
            url: url.to_string(),
            hash,
            size,
            tree,
            agent,
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// The hash tree the seed served (its length checked, its hashes not yet: each
    /// range is checked against the signed hash as it is used).
    pub fn hash_tree(&self) -> &[u8] {
        &self.tree
    }

    /// The bytes `span` of the blob from the seed, encoded with their hashes for
    /// `ranges` (the chunks of `span` still wanted) as iroh-blobs imports them (size
    /// prefix, then the BAO encoding), every chunk and parent checked against the
    /// signed hash on the way. Returns the encoding and the payload bytes received.
    pub fn verified_range(
        &self,
        span: Range<u64>,
        ranges: &ChunkRanges,
    ) -> Result<(Vec<u8>, u64), WebSeedFault> {
        let want = span.end - span.start;
        let response = self
            .agent
            .get(&self.url)
            .set("Range", &format!("bytes={}-{}", span.start, span.end - 1))
            .call()
            .map_err(|e| WebSeedFault::Unavailable(Box::new(e)))?;
        if response.status() != 206 {
            return Err(WebSeedFault::NoRanges(response.status()));
        }
        let bytes = read_at_most(response, want)?;
        if bytes.len() as u64 != want {
            return Err(WebSeedFault::RangeLength {
                got: bytes.len() as u64,
                want,
            });
        }
        let outboard = PreOrderOutboard {
            root: blake3::Hash::from_bytes(self.hash.0),
            tree: BaoTree::new(self.size, BLOCK_SIZE),
            data: &self.tree[..],
        };
        let mut encoded = self.size.to_le_bytes().to_vec();
        let piece = Piece {
            start: span.start,
            bytes,
        };
        encode_ranges_validated(&piece, outboard, ranges, &mut encoded).map_err(|e| match e {
            // A read outside the piece: the span did not cover the ranges.
            EncodeError::Io(io) => WebSeedFault::Read(io),
            other => WebSeedFault::Mismatch(other),
        })?;
        Ok((encoded, want))
    }
}

/// The byte span to ask a web seed for to cover `ranges`: whole chunk groups (a group
/// is verified as a whole), within a blob of `size` bytes.
pub fn span_of(ranges: &ChunkRanges, size: u64) -> Option<Range<u64>> {
    let group = BLOCK_SIZE.bytes() as u64;
    let bounds = ranges.boundaries();
    let first = bounds.first()?.to_bytes();
    // An odd count of boundaries leaves the last range open: to the end of the blob.
    let last = match bounds.len() % 2 {
        0 => bounds.last()?.to_bytes(),
        _ => size,
    };
    let start = (first / group) * group;
    let end = last.div_ceil(group).saturating_mul(group).min(size);
    (start < end).then_some(start..end)
}

/// Reads the body, one byte more than `limit` at most (which tells a body that is too
/// long).
fn read_at_most(response: ureq::Response, limit: u64) -> Result<Vec<u8>, WebSeedFault> {
    let mut body = Vec::new();
    io::Read::read_to_end(
        &mut io::Read::take(response.into_reader(), limit.saturating_add(1)),
        &mut body,
    )
    .map_err(WebSeedFault::Read)?;
    Ok(body)
}

/// One piece of the blob held in memory, read at the blob's offsets.
struct Piece {
    start: u64,
    bytes: Vec<u8>,
}

impl ReadAt for Piece {
    fn read_at(&self, pos: u64, buf: &mut [u8]) -> io::Result<usize> {
        let offset = pos
            .checked_sub(self.start)
            .ok_or_else(|| io::Error::other(format!("read at {pos}, before the piece")))?;
        self.bytes.as_slice().read_at(offset, buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bao_tree::ChunkNum;

    #[test]
    fn spans_cover_whole_chunk_groups_within_the_blob() {
        let size = 100_000;
        let r = |a: u64, b: u64| ChunkRanges::from(ChunkNum(a)..ChunkNum(b));
        assert_eq!(span_of(&r(0, 16), size), Some(0..16384));
        assert_eq!(span_of(&r(17, 20), size), Some(16384..32768));
        assert_eq!(
            span_of(&ChunkRanges::from(ChunkNum(80)..), size),
            Some(81920..size)
        );
        assert_eq!(span_of(&r(90, 200), size), Some(81920..size));
        assert_eq!(span_of(&ChunkRanges::empty(), size), None);
    }

    #[test]
    fn hash_trees_use_the_chunk_groups_iroh_blobs_stores() {
        assert_eq!(BLOCK_SIZE, iroh_blobs::store::IROH_BLOCK_SIZE);
    }
}
