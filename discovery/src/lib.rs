//! Nostr marketplace discovery (placeholder).
