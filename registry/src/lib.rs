//! Swarm distribution (placeholder until the swarm issue lands).
pub use archy_catalog as catalog;
