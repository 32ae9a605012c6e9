//! Which piece of a blob to ask which provider for: the pure half of the swarm fetch.
//!
//! A blob is cut into pieces (whole BLAKE3 chunk groups). Every provider has a worker
//! that asks this board for its next piece, given what that provider holds. The rules:
//!
//! - **own order**: each fetcher walks the pieces in its own shuffled order (by a hash
//!   of its node id and the piece, [`walk_key`], so any node can tell another's walk),
//!   so nodes that start together pull *different* pieces from the origin and can then
//!   trade them with each other. (Walking from an own offset is not enough: once two
//!   walks meet they move in lockstep, and both nodes ask the origin for the same
//!   pieces at the same moment, measured by bench/swarm.sh);
//! - **one taker per piece at the origin**: each piece has an owner among the fetching
//!   nodes a fetcher knows (itself and its live LAN peers), picked by rendezvous
//!   hashing on the node ids, so nodes that know the same peers agree without talking.
//!   The origin's worker takes the pieces this node owns. A peer's pieces it takes
//!   only once none of its own are left, and then at once only from a peer that is not
//!   getting its share from outside (quiet: its bitfield did not grow in a piece of its
//!   own within [`IN_PROGRESS`]); from a busy peer only after [`STEAL_AFTER`] (it may
//!   be slow), never the next [`LEFT_TO_OWNER`] it will take, and starting with the
//!   one it would reach last. Among idle nodes the one next in line for a piece (by
//!   the same hash) takes it first, so two idle nodes do not pick the same one. (A
//!   shuffled order alone let two nodes pick the same piece in the ~100 ms before
//!   either saw the other's bitfield: 1.2 x S origin egress at N=8; taking a busy
//!   peer's pieces as soon as one's own ran out still sent 5-7 pieces of 64 twice per
//!   home at the end of a run; both measured by bench/swarm.sh and bench/nat.sh);
//! - **give up what the LAN has**: a piece coming from outside is given up
//!   ([`PieceBoard::should_yield`]) when a LAN peer now holds all of it, or is getting
//!   it too and comes before this node in line for it (two nodes that started it
//!   before they knew each other: one gives up). What was verified stays; the rest
//!   comes over the LAN;
//! - **peers before the origin**: the origin's worker skips pieces that a live peer
//!   already holds (the peer serves them) and pieces a peer is downloading right now
//!   (it holds part of the piece and its bitfield grew within [`IN_PROGRESS`]: it will
//!   serve them soon), so the origin's uplink goes to pieces nobody else has or is
//!   getting; the origin still takes everything no live peer can give (a peer that
//!   stops growing frees its half-done pieces after [`IN_PROGRESS`]), and joins the
//!   endgame. It starts only once every live peer has said what it holds, or after
//!   [`PEER_GRACE`]: otherwise a fast origin would take the first pieces before a
//!   peer's bitfield arrived, and a small blob would come from the origin alone;
//! - **endgame**: once nothing is pending, an idle worker duplicates the in-flight piece
//!   that has been running longest, if it has run for [`ENDGAME_AFTER`] (at most two
//!   workers per piece; from outside, not one it would give up at once), so one slow
//!   provider cannot hold the last piece hostage;
//! - a failed piece goes back to pending unless another worker still has it in flight.
//!
//! No I/O here: [`PieceBoard`] is driven by `fetch.rs` and tested exhaustively below.

use std::{ops::Range, time::Instant};

use bao_tree::{ChunkNum, ChunkRanges};

/// BLAKE3 chunk size.
pub const CHUNK: u64 = 1024;
/// iroh-blobs stores and verifies chunk groups of 16 chunks; pieces are cut on those.
pub const CHUNK_GROUP: u64 = 16;

/// What one provider looks like to the scheduler.
#[derive(Debug, Clone)]
pub struct ProviderView {
    /// Chunk ranges the provider says it holds (its bitfield; everything for the origin
    /// or when it does not say).
    pub has: ChunkRanges,
    pub origin: bool,
    /// A peer outside this node's LAN (reached over the WAN, maybe through a relay):
    /// like the origin, it gets only the pieces no LAN peer holds or is getting, and
    /// this node's own share of them, so a home takes each piece from outside once.
    pub far: bool,
    /// Reached only through a relay right now: a far peer so reached is the last
    /// resort, asked for nothing while an origin (or web seed) is alive, and its pieces
    /// are not left to it. (Relayed bytes cross the relay host's
    /// uplink, often the origin's own, with more overhead than the origin's: measured
    /// by bench/nat.sh, 2.5 x S origin egress when homes traded through the relay.)
    pub relayed: bool,
    /// False once the provider failed for good (dead, bad data, too many stalls).
    pub alive: bool,
    /// Whether `has` is what the provider said (its first bitfield arrived); always for
    /// the origin.
    pub known: bool,
    /// When `has` last grew (the peer is downloading).
    pub grew_at: Option<Instant>,
    /// When `has` last grew in a piece this peer owns that no other LAN peer holds:
    /// it is getting its share from outside (see [`PieceBoard::saw_bitfield`]).
    pub own_growth_at: Option<Instant>,
    /// The provider's node id as a number ([`id_seed`]), for piece ownership.
    pub seed: u64,
}

/// A node id as a number: its first 8 bytes. Seeds a fetcher's own piece order and
/// ranks nodes for piece ownership.
pub fn id_seed(id: &[u8; 32]) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&id[..8]);
    u64::from_le_bytes(b)
}

impl ProviderView {
    pub fn full(origin: bool) -> Self {
        Self {
            has: ChunkRanges::all(),
            origin,
            far: false,
            relayed: false,
            alive: true,
            known: true,
            grew_at: None,
            own_growth_at: None,
            seed: 0,
        }
    }

    /// Whether it holds all of chunk range `r`.
    fn holds(&self, r: &Range<u64>) -> bool {
        self.has.is_superset(&chunk_ranges(r))
    }

    /// Whether it is getting chunk range `r` right now: it holds part of it and its
    /// bitfield grew within [`IN_PROGRESS`] of `now`.
    fn is_getting(&self, r: &Range<u64>, now: Instant) -> bool {
        recent(self.grew_at, now) && !self.has.is_disjoint(&chunk_ranges(r))
    }

    /// Whether it is a live peer on this node's LAN: one of those piece ownership is
    /// shared with.
    fn is_lan_fetcher(&self) -> bool {
        self.alive && !self.origin && !self.far
    }

    /// Whether it is getting its own share of the pieces from outside right now.
    fn is_getting_its_share(&self, now: Instant) -> bool {
        recent(self.own_growth_at, now)
    }

    /// Whether it is on this node's side of the uplink, as seen by `outsider` (a worker
    /// for the origin, a web seed or a far peer): a live peer that is not outside
    /// too, nor a far one reached through a relay (the last resort). Its pieces are for
    /// the outsider to leave alone.
    fn is_nearer_than(&self, outsider: &ProviderView) -> bool {
        self.alive && !self.origin && !(self.far && (outsider.far || self.relayed))
    }
}

/// Whether `t` lies within [`IN_PROGRESS`] before `now`.
fn recent(t: Option<Instant>, now: Instant) -> bool {
    t.is_some_and(|t| now.saturating_duration_since(t) < IN_PROGRESS)
}

fn chunk_ranges(r: &Range<u64>) -> ChunkRanges {
    ChunkRanges::from(ChunkNum(r.start)..ChunkNum(r.end))
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum PieceState {
    Pending,
    InFlight { workers: Vec<usize>, since: Instant },
    Done,
}

/// The pieces of one blob and who is fetching which.
#[derive(Debug, Clone)]
pub struct PieceBoard {
    /// Chunk range of each piece; the last one is open-ended on the wire.
    ranges: Vec<Range<u64>>,
    state: Vec<PieceState>,
    /// Piece indices in this fetcher's walking order (a permutation, by [`walk_key`]).
    order: Vec<usize>,
    /// When a worker first asked for a piece (the start of [`PEER_GRACE`]).
    first_ask: Option<Instant>,
    /// Per outside worker: since when it has found none of this node's own pieces to
    /// take (the start of [`STEAL_AFTER`]).
    idle_since: Vec<Option<Instant>>,
    /// This fetcher's node id as a number ([`id_seed`]).
    seed: u64,
}

/// SplitMix64's output function: a well-mixed 64-bit value for each input.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Where the piece ending at chunk `end` comes in the walk of the node `seed`: each
/// fetcher walks its pieces by this key, so any node can tell which of another's pieces
/// that one will reach last (a piece's end is the same on every board).
fn walk_key(seed: u64, end: u64) -> u64 {
    mix(mix(seed) ^ end)
}

/// Rendezvous weight of the node `seed` for the piece ending at chunk `end` (a piece's
/// end is the same on every fetcher's board, also after a resume): the node with the
/// highest weight owns the piece.
fn weight(seed: u64, end: u64) -> u64 {
    mix(seed ^ mix(end))
}

/// At most this many workers fetch one piece at once (endgame duplicates).
const MAX_WORKERS_PER_PIECE: usize = 2;
/// Endgame only duplicates pieces in flight at least this long: a piece about to
/// arrive is not worth its bytes twice.
pub const ENDGAME_AFTER: std::time::Duration = std::time::Duration::from_millis(750);
/// The origin waits at most this long for live peers' bitfields before it starts.
pub const PEER_GRACE: std::time::Duration = std::time::Duration::from_millis(500);
/// A peer whose bitfield grew this recently is downloading: the origin leaves the
/// pieces it holds part of to it.
pub const IN_PROGRESS: std::time::Duration = std::time::Duration::from_secs(1);
/// An outside worker with none of this node's own pieces left takes a LAN peer's
/// pieces at once when that peer is not getting its share, and after this long also
/// when it is (it may be slow).
pub const STEAL_AFTER: std::time::Duration = std::time::Duration::from_secs(2);
/// A busy owner's next pieces, left to it also by patient takers.
const LEFT_TO_OWNER: usize = 2;

impl PieceBoard {
    /// Cuts `missing` (chunk ranges not held yet, within a blob of `size` bytes) into
    /// pieces of about `piece_bytes`, walked in the order [`walk_key`] gives `seed`.
    pub fn new(size: u64, missing: &ChunkRanges, piece_bytes: u64, seed: u64) -> Self {
        let total_chunks = size.div_ceil(CHUNK).max(1);
        let piece_chunks = (piece_bytes / CHUNK)
            .div_ceil(CHUNK_GROUP)
            .max(1)
            .saturating_mul(CHUNK_GROUP);
        let mut ranges = Vec::new();
        // Boundaries alternate start, end, start, ...; an odd count leaves the last
        // range open-ended.
        let bounds = missing.boundaries();
        for pair in bounds.chunks(2) {
            let start = pair[0].0;
            let end = pair.get(1).map_or(total_chunks, |e| e.0.min(total_chunks));
            let mut s = start;
            while s < end {
                // Cut on piece boundaries of the whole blob so every fetcher's pieces line up.
                let boundary = (s / piece_chunks + 1) * piece_chunks;
                let e = boundary.min(end);
                ranges.push(s..e);
                s = e;
            }
        }
        let mut order: Vec<usize> = (0..ranges.len()).collect();
        order.sort_by_key(|&i| walk_key(seed, ranges[i].end));
        Self {
            state: vec![PieceState::Pending; ranges.len()],
            ranges,
            order,
            first_ask: None,
            idle_since: Vec::new(),
            seed,
        }
    }

    pub fn len(&self) -> usize {
        self.ranges.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    pub fn is_complete(&self) -> bool {
        self.state.iter().all(|s| *s == PieceState::Done)
    }

    pub fn is_done(&self, piece: usize) -> bool {
        self.state[piece] == PieceState::Done
    }

    /// The chunk ranges to request for `piece` (the blob's last piece reaches to the end).
    pub fn request_ranges(&self, piece: usize, total_chunks: u64) -> ChunkRanges {
        let r = &self.ranges[piece];
        if r.end >= total_chunks {
            ChunkRanges::from(ChunkNum(r.start)..)
        } else {
            ChunkRanges::from(ChunkNum(r.start)..ChunkNum(r.end))
        }
    }

    /// The next piece for `worker` (an index into `providers`), marked in flight; `None`
    /// when it has nothing to do right now.
    pub fn next_for(
        &mut self,
        worker: usize,
        providers: &[ProviderView],
        now: Instant,
    ) -> Option<usize> {
        let me = providers.get(worker)?;
        let origin_there = || {
            (0..providers.len()).any(|j| j != worker && providers[j].origin && providers[j].alive)
        };
        if !me.alive || (me.relayed && me.far && !me.origin && origin_there()) {
            return None;
        }
        let first_ask = *self.first_ask.get_or_insert(now);
        if me.origin
            && now.saturating_duration_since(first_ask) < PEER_GRACE
            && providers.iter().any(|p| !p.origin && p.alive && !p.known)
        {
            return None;
        }
        // The origin and far peers are "outside": they give what the peers nearer by
        // cannot (for the origin every peer is nearer; for a far peer, LAN peers).
        let outside = me.origin || me.far;
        let served_by_peer = |r: &Range<u64>| {
            providers.iter().enumerate().any(|(i, p)| {
                i != worker && p.is_nearer_than(me) && (p.holds(r) || p.is_getting(r, now))
            })
        };
        let candidates: Vec<usize> = self
            .order
            .iter()
            .copied()
            .filter(|&i| {
                self.state[i] == PieceState::Pending
                    && me.holds(&self.ranges[i])
                    && !(outside && served_by_peer(&self.ranges[i]))
            })
            .collect();
        let pending = match outside {
            true => self.outside_pick(worker, &candidates, providers, now),
            false => candidates.first().copied(),
        };
        if let Some(i) = pending {
            self.state[i] = PieceState::InFlight {
                workers: vec![worker],
                since: now,
            };
            return Some(i);
        }
        if self.state.contains(&PieceState::Pending) {
            return None;
        }
        // Endgame: duplicate the longest-running piece this provider can serve (from
        // outside, not one it would give up at once: a LAN peer holds it, or is getting
        // it and comes first in line).
        let mut best: Option<(usize, Instant)> = None;
        for (i, s) in self.state.iter().enumerate() {
            if let PieceState::InFlight { workers, since } = s {
                if workers.len() < MAX_WORKERS_PER_PIECE
                    && now.saturating_duration_since(*since) >= ENDGAME_AFTER
                    && !workers.contains(&worker)
                    && me.holds(&self.ranges[i])
                    && !self.should_yield(i, worker, providers, now)
                    && best.is_none_or(|(_, t)| *since < t)
                {
                    best = Some((i, *since));
                }
            }
        }
        let (i, _) = best?;
        if let PieceState::InFlight { workers, .. } = &mut self.state[i] {
            workers.push(worker);
        }
        Some(i)
    }

    /// Which of `candidates` (pending, in this node's walking order) the outside worker
    /// `worker` takes. Each piece has an owner among the LAN peers (rendezvous hashing),
    /// so a home takes it from outside once: this node's own pieces first. Once none
    /// is left, a peer's pieces: all of them from a peer that is not getting its share
    /// from outside (gone quiet, or not started), and after [`STEAL_AFTER`] also from
    /// one that is (it may be slow), but never the next [`LEFT_TO_OWNER`] it will take.
    /// Of those, the ones this node comes earliest in line for (so two idle nodes do
    /// not take the same), then the one its owner would reach last. (Taking a busy
    /// owner's pieces sooner only made two nodes ask the origin for one piece: a peer's
    /// start on a piece shows in its bitfield a few hundred ms late.)
    fn outside_pick(
        &mut self,
        worker: usize,
        candidates: &[usize],
        providers: &[ProviderView],
        now: Instant,
    ) -> Option<usize> {
        if self.idle_since.len() <= worker {
            self.idle_since.resize(worker + 1, None);
        }
        let owners: Vec<Option<usize>> = candidates
            .iter()
            .map(|&i| self.owner(i, providers))
            .collect();
        if let Some(k) = owners.iter().position(Option::is_none) {
            self.idle_since[worker] = None;
            return Some(candidates[k]);
        }
        let idle_since = *self.idle_since[worker].get_or_insert(now);
        let patient = now.saturating_duration_since(idle_since) >= STEAL_AFTER;
        // Each peer's pieces in the order it walks them.
        let mut theirs: Vec<(usize, u64, usize)> = candidates
            .iter()
            .zip(&owners)
            .filter_map(|(&i, owner)| {
                let x = (*owner)?;
                Some((x, walk_key(providers[x].seed, self.ranges[i].end), i))
            })
            .collect();
        theirs.sort_unstable();
        let mut best: Option<((std::cmp::Reverse<usize>, u64), usize)> = None;
        let mut group_start = 0;
        for (k, &(x, key, i)) in theirs.iter().enumerate() {
            if k > 0 && theirs[k - 1].0 != x {
                group_start = k;
            }
            let reached_before = k - group_start;
            let takeable = !providers[x].is_getting_its_share(now)
                || (patient && reached_before >= LEFT_TO_OWNER);
            let rank = (std::cmp::Reverse(self.rank(i, providers)), key);
            if takeable && best.is_none_or(|(b, _)| rank > b) {
                best = Some((rank, i));
            }
        }
        best.map(|(_, i)| i)
    }

    /// Who owns `piece` among this node and its live LAN peers: the highest rendezvous
    /// weight; `None` when this node does (also on a tie, so a lone fetcher owns all).
    fn owner(&self, piece: usize, providers: &[ProviderView]) -> Option<usize> {
        let end = self.ranges[piece].end;
        let mut best = (weight(self.seed, end), None);
        for (i, p) in providers.iter().enumerate() {
            if p.is_lan_fetcher() && weight(p.seed, end) > best.0 {
                best = (weight(p.seed, end), Some(i));
            }
        }
        best.1
    }

    /// How many live LAN peers come before this node for `piece` (0: it owns it).
    fn rank(&self, piece: usize, providers: &[ProviderView]) -> usize {
        let end = self.ranges[piece].end;
        let mine = weight(self.seed, end);
        providers
            .iter()
            .filter(|p| p.is_lan_fetcher() && weight(p.seed, end) > mine)
            .count()
    }

    /// Whether `worker` should give `piece` up: it is an outside provider and a LAN
    /// peer now holds the whole piece (it came from elsewhere meanwhile), or is getting
    /// it too and comes before this node in line for it (both started it before they
    /// saw each other: exactly one of them gives up). The rest comes over the LAN and
    /// the uplink is spared; what was verified stays stored.
    pub fn should_yield(
        &self,
        piece: usize,
        worker: usize,
        providers: &[ProviderView],
        now: Instant,
    ) -> bool {
        let Some(me) = providers.get(worker) else {
            return false;
        };
        let (r, end) = (&self.ranges[piece], self.ranges[piece].end);
        (me.origin || me.far)
            && providers.iter().enumerate().any(|(i, p)| {
                i != worker
                    && p.is_nearer_than(me)
                    && (p.holds(r)
                        || (p.is_getting(r, now) && weight(p.seed, end) > weight(self.seed, end)))
            })
    }

    /// Provider `i` said it holds `ranges` (an observe answer): its view grows, dated
    /// (it is downloading, also when this is its first answer and holds only part);
    /// growth in a piece it owns that no other LAN peer holds dates
    /// [`ProviderView::own_growth_at`]: it is getting its share from outside.
    pub fn saw_bitfield(
        &self,
        providers: &mut [ProviderView],
        i: usize,
        ranges: &ChunkRanges,
        now: Instant,
    ) {
        let Some(view) = providers.get(i) else { return };
        let added = ranges.difference(&view.has);
        if !added.is_empty() {
            let own = (0..self.ranges.len()).any(|k| {
                let r = &self.ranges[k];
                // Cheapest test first: this runs on every bitfield answer.
                !added.is_disjoint(&chunk_ranges(r))
                    && self.state[k] != PieceState::Done
                    && self.owner(k, providers) == Some(i)
                    && !providers
                        .iter()
                        .enumerate()
                        .any(|(j, p)| j != i && p.is_lan_fetcher() && p.holds(r))
            });
            let view = &mut providers[i];
            view.grew_at = Some(now);
            if own {
                view.own_growth_at = Some(now);
            }
            view.has |= added;
        }
        providers[i].known = true;
    }

    /// `piece` is verified and stored.
    pub fn complete(&mut self, piece: usize) {
        self.state[piece] = PieceState::Done;
    }

    /// `worker` gave up on `piece`: it goes back to pending unless another worker
    /// still has it in flight.
    pub fn release(&mut self, piece: usize, worker: usize) {
        if let PieceState::InFlight { workers, .. } = &mut self.state[piece] {
            workers.retain(|w| *w != worker);
            if workers.is_empty() {
                self.state[piece] = PieceState::Pending;
            }
        }
    }

    /// `worker` is gone: every piece it had in flight is released.
    pub fn release_all(&mut self, worker: usize) {
        for piece in 0..self.state.len() {
            self.release(piece, worker);
        }
    }

    /// Bytes in pieces not yet done (the last piece counted up to `size`).
    pub fn remaining_bytes(&self, size: u64) -> u64 {
        self.ranges
            .iter()
            .zip(&self.state)
            .filter(|(_, s)| **s != PieceState::Done)
            .map(|(r, _)| (r.end * CHUNK).min(size).saturating_sub(r.start * CHUNK))
            .sum()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const MIB: u64 = 1 << 20;

    fn all_missing() -> ChunkRanges {
        ChunkRanges::all()
    }

    impl PieceBoard {
        /// The same board walked in piece order, so tests can name the pieces.
        fn in_order(mut self) -> Self {
            self.order.sort_unstable();
            self
        }
    }

    /// A LAN peer as a test sees it: known, alive, holding `has`, not growing.
    fn lan_peer(seed: u64, has: ChunkRanges) -> ProviderView {
        ProviderView {
            has,
            origin: false,
            far: false,
            relayed: false,
            alive: true,
            known: true,
            grew_at: None,
            own_growth_at: None,
            seed,
        }
    }

    fn chunks(a: u64, b: u64) -> ChunkRanges {
        ChunkRanges::from(ChunkNum(a)..ChunkNum(b))
    }

    #[test]
    fn pieces_cover_exactly_what_is_missing_on_group_boundaries() {
        let b = PieceBoard::new(10 * MIB + 5, &all_missing(), MIB, 0).in_order();
        assert_eq!(b.len(), 11);
        assert_eq!(b.ranges[0], 0..1024);
        assert_eq!(b.ranges[10], 10240..10241);
        // Resume: held ranges are not pieces; cuts stay on the blob's piece grid.
        let missing = ChunkRanges::all().difference(&chunks(0, 1500));
        let b = PieceBoard::new(4 * MIB, &missing, MIB, 0).in_order();
        assert_eq!(b.ranges[0], 1500..2048);
        assert_eq!(b.len(), 3);
        assert_eq!(b.remaining_bytes(4 * MIB), 4 * MIB - 1500 * CHUNK);
        // A piece size that is not a multiple of a chunk group is rounded up to one.
        let b = PieceBoard::new(MIB, &all_missing(), 1000, 0).in_order();
        assert!(b.ranges.iter().all(|r| r.start % CHUNK_GROUP == 0));
        // Nothing missing, nothing to do.
        let b = PieceBoard::new(MIB, &ChunkRanges::empty(), MIB, 5);
        assert!(b.is_empty() && b.is_complete());
    }

    #[test]
    fn the_last_piece_reaches_to_the_end_on_the_wire() {
        let b = PieceBoard::new(3 * MIB, &all_missing(), MIB, 0).in_order();
        let total = (3 * MIB).div_ceil(CHUNK);
        assert_eq!(b.request_ranges(0, total), chunks(0, 1024));
        assert_eq!(
            b.request_ranges(2, total),
            ChunkRanges::from(ChunkNum(2048)..)
        );
    }

    #[test]
    fn fetchers_walk_their_own_order() {
        let now = Instant::now();
        let p = vec![ProviderView::full(true)];
        let walk = |seed: u64| {
            let mut b = PieceBoard::new(64 * MIB, &all_missing(), MIB, seed);
            let order: Vec<usize> = std::iter::from_fn(|| b.next_for(0, &p, now)).collect();
            order
        };
        let a = walk(1);
        // Every piece exactly once, and the same walk for the same seed.
        let mut sorted = a.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..64).collect::<Vec<_>>());
        assert_eq!(walk(1), a);
        // Eight fetchers that start together ask for eight different first pieces
        // (true for these seeds), and two walks do not run in lockstep: their next
        // pieces after a shared one differ.
        let firsts: std::collections::BTreeSet<usize> = (1..=8).map(|s| walk(s)[0]).collect();
        assert_eq!(firsts.len(), 8, "{firsts:?}");
        let b = walk(2);
        let follows = |w: &[usize], piece: usize| {
            w[(w.iter().position(|&x| x == piece).unwrap() + 1) % w.len()]
        };
        let same_next = (0..64)
            .filter(|&i| follows(&a, i) == follows(&b, i))
            .count();
        assert!(
            same_next < 8,
            "{same_next} of 64 pieces are followed by the same piece"
        );
    }

    #[test]
    fn fetchers_that_know_each_other_take_different_pieces_from_the_origin() {
        let now = Instant::now();
        let seeds = [11u64, 22, 33];
        let owner =
            |end: u64, alive: &[u64]| *alive.iter().max_by_key(|&&s| weight(s, end)).unwrap();
        // What fetcher `me` takes from the origin, in order, seeing the others (known,
        // holding nothing yet) with `alive` among them still alive.
        let walk = |me: u64, alive: &[u64]| {
            let mut p = vec![ProviderView::full(true)];
            for &other in seeds.iter().filter(|&&s| s != me) {
                p.push(ProviderView {
                    alive: alive.contains(&other),
                    ..lan_peer(other, ChunkRanges::empty())
                });
            }
            let mut b = PieceBoard::new(60 * MIB, &all_missing(), MIB, me);
            let ends: Vec<u64> = b.ranges.iter().map(|r| r.end).collect();
            let order: Vec<usize> = std::iter::from_fn(|| b.next_for(0, &p, now)).collect();
            (order, ends)
        };
        let mut owners = vec![0u64; 60];
        for &me in &seeds {
            let (order, ends) = walk(me, &seeds);
            assert_eq!(order.len(), 60, "the origin still gives every piece");
            // Its own pieces first, then the others' (for when theirs are slow).
            let own = order
                .iter()
                .take_while(|&&i| owner(ends[i], &seeds) == me)
                .count();
            assert!((10..=30).contains(&own), "{me} owns {own} of 60");
            assert!(order[own..].iter().all(|&i| owner(ends[i], &seeds) != me));
            for &i in &order[..own] {
                assert_eq!(owners[i], 0, "piece {i} owned twice");
                owners[i] = me;
            }
        }
        assert!(
            owners.iter().all(|&o| o != 0),
            "every piece has an owner: {owners:?}"
        );
        // A dead peer's pieces pass to the live ones.
        let (order, ends) = walk(11, &[11, 22]);
        let own = order
            .iter()
            .take_while(|&&i| owner(ends[i], &[11, 22]) == 11)
            .count();
        let before = owners.iter().filter(|&&o| o == 11).count();
        assert!(own > before, "11 owned {before}, and {own} once 33 died");
    }

    #[test]
    fn the_origin_leaves_pieces_a_free_peer_holds() {
        let now = Instant::now();
        let mut b = PieceBoard::new(4 * MIB, &all_missing(), MIB, 0).in_order();
        let peer_has = lan_peer(0, chunks(0, 2048));
        let p = vec![ProviderView::full(true), peer_has];
        assert_eq!(b.next_for(0, &p, now), Some(2), "origin skips pieces 0,1");
        assert_eq!(b.next_for(1, &p, now), Some(0));
        assert_eq!(b.next_for(0, &p, now), Some(3));
        // Piece 1 waits for the peer, even while the peer is busy.
        assert_eq!(b.next_for(0, &p, now), None);
        assert_eq!(b.next_for(1, &p, now), Some(1));
        // Endgame: with nothing pending, the origin does not duplicate what the peer
        // holds (it comes over the LAN), only what it does not.
        assert_eq!(b.next_for(0, &p, now + ENDGAME_AFTER), None);
        let mut b = PieceBoard::new(4 * MIB, &all_missing(), MIB, 0).in_order();
        let mut q = p.clone();
        q.push(ProviderView::full(false));
        assert_eq!(b.next_for(2, &q, now), Some(0), "a third provider");
        b.complete(1);
        b.complete(2);
        b.complete(3);
        q[1].has = chunks(1024, 4096);
        assert_eq!(b.next_for(0, &q, now + ENDGAME_AFTER), None, "q[2] holds 0");
        q[2].has = chunks(1024, 4096);
        assert_eq!(b.next_for(0, &q, now + ENDGAME_AFTER), Some(0));
    }

    #[test]
    fn a_far_peer_gives_only_what_no_lan_peer_has_and_the_origin_serves_each_home() {
        let now = Instant::now();
        let mut b = PieceBoard::new(4 * MIB, &all_missing(), MIB, 0).in_order();
        let view = |has: ChunkRanges, far: bool, seed: u64| ProviderView {
            far,
            ..lan_peer(seed, has)
        };
        // Worker 0: a far peer holding everything; worker 1: a LAN peer with pieces 0, 1;
        // worker 2: a far peer holding pieces 0..3.
        let p = vec![
            view(ChunkRanges::all(), true, 7),
            view(chunks(0, 2048), false, 0),
            view(chunks(0, 3072), true, 9),
        ];
        assert_eq!(
            b.next_for(0, &p, now),
            Some(2),
            "far skips what the LAN peer has"
        );
        assert_eq!(b.next_for(1, &p, now), Some(0));
        assert_eq!(
            b.next_for(0, &p, now),
            Some(3),
            "another far peer's pieces do not count"
        );
        assert_eq!(b.next_for(2, &p, now), None, "the rest is the LAN peer's");
        // The far peers do not share ownership with this node: its own share is all.
        let mut solo = PieceBoard::new(2 * MIB, &all_missing(), MIB, 1).in_order();
        let far_only = vec![view(ChunkRanges::all(), true, u64::MAX)];
        assert_eq!(solo.next_for(0, &far_only, now), Some(0));
        assert_eq!(solo.next_for(0, &far_only, now), Some(1));
    }

    #[test]
    fn a_relayed_peer_gives_only_what_no_origin_can() {
        let now = Instant::now();
        let mut b = PieceBoard::new(2 * MIB, &all_missing(), MIB, 0).in_order();
        let relayed = ProviderView {
            far: true,
            relayed: true,
            ..lan_peer(9, ChunkRanges::all())
        };
        let mut p = vec![relayed, ProviderView::full(true)];
        assert_eq!(b.next_for(0, &p, now), None, "the origin is there");
        let mut o = PieceBoard::new(2 * MIB, &all_missing(), MIB, 0).in_order();
        let relayed_origin = vec![ProviderView {
            relayed: true,
            ..ProviderView::full(true)
        }];
        assert_eq!(
            o.next_for(0, &relayed_origin, now),
            Some(0),
            "an origin behind a relay"
        );
        p[1].alive = false;
        assert_eq!(b.next_for(0, &p, now), Some(0), "the origin is gone");
        // The origin does not leave it what it holds.
        let mut b = PieceBoard::new(2 * MIB, &all_missing(), MIB, 0).in_order();
        p[1].alive = true;
        assert_eq!(b.next_for(1, &p, now), Some(0));
        // Once a hole is punched (direct), it is a far peer like any other.
        let mut b = PieceBoard::new(2 * MIB, &all_missing(), MIB, 0).in_order();
        p[1].alive = true;
        p[0].relayed = false;
        assert_eq!(b.next_for(0, &p, now), Some(0));
    }

    #[test]
    fn an_idle_fetcher_leaves_a_busy_peer_its_pieces_until_it_seems_slow() {
        let t0 = Instant::now();
        let (me, peer) = (1u64, 2u64);
        let mut p = vec![
            ProviderView::full(true),
            lan_peer(peer, ChunkRanges::empty()),
        ];
        p[1].own_growth_at = Some(t0);
        let mut b = PieceBoard::new(32 * MIB, &all_missing(), MIB, me);
        let theirs: Vec<usize> = (0..b.len())
            .filter(|&i| b.owner(i, &p) == Some(1))
            .collect();
        let mine = b.len() - theirs.len();
        assert!(mine > 4 && theirs.len() > 4, "{mine} / {}", theirs.len());
        // Its own pieces first.
        let own: Vec<usize> = std::iter::from_fn(|| b.next_for(0, &p, t0)).collect();
        assert_eq!(own.len(), mine);
        assert!(own.iter().all(|&i| b.owner(i, &p).is_none()));
        // Then none of the busy peer's, until STEAL_AFTER.
        let t1 = t0 + STEAL_AFTER / 2;
        p[1].own_growth_at = Some(t1);
        assert_eq!(b.next_for(0, &p, t1), None);
        // Then the peer's pieces from the end of its walk, but never its next two.
        let t2 = t0 + STEAL_AFTER;
        p[1].own_growth_at = Some(t2);
        let mut walk = theirs.clone();
        walk.sort_by_key(|&i| walk_key(peer, b.ranges[i].end));
        let taken: Vec<usize> = std::iter::from_fn(|| b.next_for(0, &p, t2)).collect();
        let expected: Vec<usize> = walk[LEFT_TO_OWNER..].iter().rev().copied().collect();
        assert_eq!(taken, expected);
        // A peer gone quiet leaves those to others too.
        let t3 = t2 + IN_PROGRESS;
        assert_eq!(b.next_for(0, &p, t3), Some(walk[1]));
        assert_eq!(b.next_for(0, &p, t3), Some(walk[0]));
        // Taking one's own piece again restarts the wait.
        let mut b = PieceBoard::new(32 * MIB, &all_missing(), MIB, me);
        p[1].own_growth_at = Some(t0);
        let own: Vec<usize> = std::iter::from_fn(|| b.next_for(0, &p, t0)).collect();
        b.release(own[0], 0);
        assert_eq!(b.next_for(0, &p, t2), Some(own[0]));
        p[1].own_growth_at = Some(t2);
        assert_eq!(b.next_for(0, &p, t2), None, "idle only from now");
    }

    #[test]
    fn idle_fetchers_take_a_quiet_peers_pieces_in_different_orders() {
        let now = Instant::now();
        let quiet = 7u64;
        // What `me` takes from the origin of the quiet peer's pieces, in order, with the
        // end of each.
        let take = |me: u64, other: u64| {
            let p = vec![
                ProviderView::full(true),
                lan_peer(other, ChunkRanges::empty()),
                lan_peer(quiet, ChunkRanges::empty()),
            ];
            let mut b = PieceBoard::new(48 * MIB, &all_missing(), MIB, me);
            let order: Vec<usize> = std::iter::from_fn(|| b.next_for(0, &p, now)).collect();
            assert_eq!(order.len(), 48, "a quiet peer's pieces are all taken");
            order
                .into_iter()
                .filter(|&i| b.owner(i, &p) == Some(2))
                .map(|i| b.ranges[i].end)
                .collect::<Vec<u64>>()
        };
        for (me, other) in [(5u64, 6u64), (6, 5)] {
            let ends = take(me, other);
            let second = |end: &u64| weight(me, *end) > weight(other, *end);
            let firsts = ends.iter().take_while(|e| second(e)).count();
            assert!(firsts > 2, "{me} is second for {firsts}: {ends:?}");
            assert!(
                ends[firsts..].iter().all(|e| !second(e)),
                "{me} takes the pieces it is second in line for first: {ends:?}"
            );
        }
    }

    #[test]
    fn a_piece_from_outside_is_given_up_to_a_lan_peer_that_has_it_or_comes_first() {
        let now = Instant::now();
        let b = PieceBoard::new(16 * MIB, &all_missing(), MIB, 10).in_order();
        let mut p = vec![ProviderView::full(true), lan_peer(20, ChunkRanges::empty())];
        let whole = |i: usize| chunks(b.ranges[i].start, b.ranges[i].end);
        let part = |i: usize| chunks(b.ranges[i].start, b.ranges[i].start + 16);
        let before = (0..16).find(|&i| weight(20, b.ranges[i].end) > weight(10, b.ranges[i].end));
        let after = (0..16).find(|&i| weight(20, b.ranges[i].end) < weight(10, b.ranges[i].end));
        let (Some(before), Some(after)) = (before, after) else {
            panic!("both kinds of piece among 16")
        };
        assert!(!b.should_yield(before, 0, &p, now), "the peer has nothing");
        p[1].has = whole(before);
        assert!(
            b.should_yield(before, 0, &p, now),
            "the peer holds it whole"
        );
        assert!(
            !b.should_yield(before, 1, &p, now),
            "only outside providers give up"
        );
        // Both getting the same piece: the one later in line gives up.
        p[1].has = part(before) | part(after);
        p[1].grew_at = Some(now);
        assert!(b.should_yield(before, 0, &p, now));
        assert!(!b.should_yield(after, 0, &p, now));
        assert!(
            !b.should_yield(before, 0, &p, now + IN_PROGRESS),
            "it stopped"
        );
        // A far peer (worker 0 now) gives up to a LAN peer, not to another far one.
        p[0] = ProviderView {
            far: true,
            ..lan_peer(30, ChunkRanges::all())
        };
        p[1].has = whole(before);
        assert!(b.should_yield(before, 0, &p, now));
        p[1].far = true;
        assert!(!b.should_yield(before, 0, &p, now));
    }

    #[test]
    fn the_endgame_from_outside_skips_a_piece_it_would_give_up() {
        let t0 = Instant::now();
        let t1 = t0 + ENDGAME_AFTER;
        let end = MIB / CHUNK;
        let outranks = |seed: &u64| weight(*seed, end) > weight(10, end);
        for (lan_seed, dup) in [
            ((11..).find(outranks).unwrap(), None),
            ((11..).find(|s| !outranks(s)).unwrap(), Some(0)),
        ] {
            let mut b = PieceBoard::new(MIB, &all_missing(), MIB, 10);
            // The origin, a LAN peer with part of the only piece (then getting it), a
            // web seed.
            let mut p = vec![
                ProviderView::full(true),
                lan_peer(lan_seed, chunks(0, 16)),
                ProviderView::full(true),
            ];
            assert_eq!(b.next_for(2, &p, t0), Some(0), "the web seed takes it");
            p[1].grew_at = Some(t1);
            assert_eq!(
                b.next_for(0, &p, t1),
                dup,
                "the origin duplicates it only if the peer comes after this node"
            );
        }
    }

    #[test]
    fn a_bitfield_tells_who_is_downloading_and_who_gets_its_share() {
        let t = Instant::now();
        let b = PieceBoard::new(16 * MIB, &all_missing(), MIB, 10).in_order();
        let mut p = vec![
            ProviderView::full(true),
            lan_peer(20, ChunkRanges::empty()),
            lan_peer(30, ChunkRanges::empty()),
        ];
        p[1].known = false;
        let theirs: Vec<usize> = (0..16).filter(|&i| b.owner(i, &p) == Some(1)).collect();
        let mine = (0..16).find(|&i| b.owner(i, &p).is_none());
        let (Some(mine), [a, c, ..]) = (mine, theirs.as_slice()) else {
            panic!("pieces of both among 16")
        };
        let part = |i: usize| chunks(b.ranges[i].start, b.ranges[i].start + 16);
        // A first answer holding part of a piece: known, and downloading.
        b.saw_bitfield(&mut p, 1, &part(mine), t);
        assert!(p[1].known && p[1].grew_at == Some(t), "{:?}", p[1]);
        assert_eq!(p[1].own_growth_at, None, "a piece this node owns");
        // Growth in a piece of its own that no other LAN peer holds: it is getting its
        // share from outside.
        let t1 = t + ENDGAME_AFTER;
        let grown = part(mine) | part(*a);
        b.saw_bitfield(&mut p, 1, &grown, t1);
        assert_eq!((p[1].grew_at, p[1].own_growth_at), (Some(t1), Some(t1)));
        assert_eq!(p[1].has, grown);
        // The same answer again dates nothing.
        b.saw_bitfield(&mut p, 1, &grown, t1 + IN_PROGRESS);
        assert_eq!((p[1].grew_at, p[1].own_growth_at), (Some(t1), Some(t1)));
        // Growth in its own piece that another LAN peer holds whole may come from there.
        let t2 = t1 + IN_PROGRESS;
        p[2].has = chunks(b.ranges[*c].start, b.ranges[*c].end);
        b.saw_bitfield(&mut p, 1, &(grown | part(*c)), t2);
        assert_eq!((p[1].grew_at, p[1].own_growth_at), (Some(t2), Some(t1)));
    }

    #[test]
    fn the_origin_leaves_pieces_a_downloading_peer_is_getting() {
        let now = Instant::now();
        // The peer holds half of piece 0 and its bitfield grew just now.
        let downloading = ProviderView {
            grew_at: Some(now),
            ..lan_peer(0, chunks(0, 512))
        };
        let mut p = vec![ProviderView::full(true), downloading];
        let mut b = PieceBoard::new(2 * MIB, &all_missing(), MIB, 0).in_order();
        assert_eq!(b.next_for(0, &p, now), Some(1), "piece 0 is on its way");
        assert_eq!(b.next_for(0, &p, now), None);
        // A peer that stopped growing frees its half-done piece for the origin.
        assert_eq!(b.next_for(0, &p, now + IN_PROGRESS), Some(0));

        // A dead peer does not hold a piece back either.
        let mut b = PieceBoard::new(2 * MIB, &all_missing(), MIB, 0).in_order();
        p[1].alive = false;
        assert_eq!(b.next_for(0, &p, now), Some(0));
        // A peer that never grew (it holds a piece from before) only holds back what
        // it holds whole.
        let mut b = PieceBoard::new(2 * MIB, &all_missing(), MIB, 0).in_order();
        p[1].alive = true;
        p[1].grew_at = None;
        assert_eq!(b.next_for(0, &p, now), Some(0));
    }

    #[test]
    fn the_origin_waits_briefly_for_peers_to_say_what_they_hold() {
        let now = Instant::now();
        let unknown = ProviderView {
            known: false,
            ..lan_peer(0, ChunkRanges::empty())
        };
        let mut b = PieceBoard::new(2 * MIB, &all_missing(), MIB, 0).in_order();
        let mut p = vec![ProviderView::full(true), unknown.clone()];
        assert_eq!(b.next_for(0, &p, now), None, "the peer has not said yet");
        // The peer holds piece 0: the origin takes only piece 1.
        p[1].has = chunks(0, 1024);
        p[1].known = true;
        assert_eq!(b.next_for(0, &p, now), Some(1));
        assert_eq!(b.next_for(0, &p, now), None);
        assert_eq!(b.next_for(1, &p, now), Some(0));

        // A peer that never says (or dies) holds the origin back only for the grace.
        let mut b = PieceBoard::new(2 * MIB, &all_missing(), MIB, 0).in_order();
        let mut p = vec![ProviderView::full(true), unknown.clone()];
        assert_eq!(b.next_for(0, &p, now), None);
        assert_eq!(b.next_for(0, &p, now + PEER_GRACE), Some(0));
        let mut b = PieceBoard::new(2 * MIB, &all_missing(), MIB, 0).in_order();
        p[1].alive = false;
        assert_eq!(
            b.next_for(0, &p, now),
            Some(0),
            "a dead peer is not waited for"
        );
        // Peers never wait, not even for another peer that has not said yet.
        let mut b = PieceBoard::new(2 * MIB, &all_missing(), MIB, 0).in_order();
        let p = vec![ProviderView::full(false), unknown];
        assert_eq!(b.next_for(0, &p, now), Some(0));
    }

    #[test]
    fn a_peer_only_gets_pieces_it_holds_and_dead_providers_get_nothing() {
        let now = Instant::now();
        let mut b = PieceBoard::new(4 * MIB, &all_missing(), MIB, 0).in_order();
        let mut p = vec![lan_peer(0, chunks(2048, 3072))];
        assert_eq!(b.next_for(0, &p, now), Some(2));
        assert_eq!(b.next_for(0, &p, now), None, "nothing else it holds");
        p[0].alive = false;
        b.release(2, 0);
        assert_eq!(b.next_for(0, &p, now), None);
        assert_eq!(b.next_for(5, &p, now), None, "unknown worker");
    }

    #[test]
    fn released_pieces_go_back_and_endgame_duplicates_the_oldest() {
        let t0 = Instant::now();
        let t1 = t0 + ENDGAME_AFTER;
        let p = vec![ProviderView::full(false); 3];
        let mut b = PieceBoard::new(2 * MIB, &all_missing(), MIB, 0).in_order();
        assert_eq!(b.next_for(1, &p, t0), Some(0));
        assert_eq!(b.next_for(2, &p, t1), Some(1));
        // Nothing pending: worker 0 duplicates the piece in flight longest, once it
        // has been in flight long enough.
        assert_eq!(b.next_for(0, &p, t0), None);
        assert_eq!(b.next_for(0, &p, t1), Some(0));
        // Two workers on piece 0 already; worker 1 is on 0; piece 1 has one worker.
        let t2 = t1 + ENDGAME_AFTER;
        assert_eq!(b.next_for(1, &p, t2), Some(1));
        assert_eq!(b.next_for(2, &p, t2), None, "every piece has two workers");
        // Worker 1 fails piece 0: worker 0 still has it, so it is not pending again.
        b.release(0, 1);
        assert!(!b.state.contains(&PieceState::Pending));
        b.release(0, 0);
        assert_eq!(b.state[0], PieceState::Pending);
        b.complete(1);
        assert_eq!(b.next_for(2, &p, t1), Some(0));
        b.complete(0);
        assert!(b.is_complete());
        assert_eq!(b.remaining_bytes(2 * MIB), 0);
        assert_eq!(b.next_for(0, &p, t1), None);
    }

    #[test]
    fn every_piece_is_handed_out_until_done_whatever_fails() {
        // Exhaustive-ish: random failures and completions always end complete while one
        // full provider stays alive.
        let now = Instant::now() + ENDGAME_AFTER;
        for seed in 0..200u64 {
            let mut rng = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
            let mut next = || {
                rng = rng
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                rng >> 33
            };
            let mut p = vec![
                ProviderView::full(true),
                lan_peer(0, chunks(0, 3000)),
                ProviderView::full(false),
            ];
            let mut b = PieceBoard::new(5 * MIB, &all_missing(), MIB, seed);
            let mut inflight: Vec<(usize, usize)> = Vec::new();
            for _step in 0..10_000 {
                if b.is_complete() {
                    break;
                }
                let w = (next() % 3) as usize;
                if next() % 2 == 0 {
                    if let Some(piece) = b.next_for(w, &p, now) {
                        inflight.push((w, piece));
                    }
                } else if !inflight.is_empty() {
                    let k = (next() as usize) % inflight.len();
                    let (w, piece) = inflight.swap_remove(k);
                    match next() % 4 {
                        0 => b.release(piece, w),
                        1 if w == 2 && seed % 3 == 0 => {
                            p[2].alive = false;
                            b.release(piece, w);
                        }
                        _ => b.complete(piece),
                    }
                }
            }
            assert!(b.is_complete(), "seed {seed} did not finish");
        }
    }
}
