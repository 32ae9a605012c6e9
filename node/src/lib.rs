//! # archy-node
//!
//! The node side of Archy: the daemon (`archy node run`) that syncs the signed catalog,
//! takes part in the swarm, reconciles desired apps onto a container runtime and serves a
//! local API, plus the library code the `archy` CLI uses to talk to it.

pub mod app_identity;
pub mod client;
pub mod config;
pub mod daemon;
pub mod executor;
pub mod planner;
pub mod policy;
pub mod runtime;
pub mod secrets;
pub mod state;
pub mod swarm_source;
pub mod web_seed;
