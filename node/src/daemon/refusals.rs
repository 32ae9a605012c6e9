//! Refused inputs: counted every time, logged once per source.
//!
//! A hostile peer can send the same oversized head every 30 s for as long as the node
//! runs, and a stranger's announcement can claim the same impossible image size on every
//! reconcile pass. A log line each time would bury every other message and fill the
//! disk. The first refusal of an input from a source is logged at WARN with its reason;
//! repeats are counted in `archy_refused_inputs_total{input}` and logged at DEBUG.

use std::{collections::HashSet, fmt::Display, sync::Mutex};

use prometheus_client::metrics::{counter::Counter, family::Family};

/// Sources remembered before the memory starts over (then each is logged once more).
const MAX_REMEMBERED: usize = 4096;

/// What kind of input was refused: the metric's `input` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Input {
    /// An image whose claimed size is over `max_image_bytes`.
    ImageSize,
    /// A signed head that did not verify, or a head stream that broke the protocol's
    /// order or limits.
    Head,
}

impl Input {
    fn label(self) -> &'static str {
        match self {
            Input::ImageSize => "image_size",
            Input::Head => "head",
        }
    }
}

/// The refusal counters and the sources already logged.
#[derive(Debug, Default)]
pub(super) struct Refusals {
    counts: Family<Vec<(&'static str, &'static str)>, Counter>,
    logged: Mutex<HashSet<(Input, String)>>,
}

impl Refusals {
    /// Counts a refusal of `input` from `source`, and logs it if it is the first from
    /// that source. Returns whether it was logged.
    pub(super) fn refuse(&self, input: Input, source: &str, reason: &dyn Display) -> bool {
        self.counts
            .get_or_create(&vec![("input", input.label())])
            .inc();
        let first = match self.logged.lock() {
            Ok(mut logged) => {
                if logged.len() >= MAX_REMEMBERED {
                    logged.clear();
                }
                logged.insert((input, source.to_string()))
            }
            Err(_) => true,
        };
        let input = input.label();
        match first {
            true => {
                tracing::warn!(input, source, %reason, "input refused (further refusals from this source are counted in archy_refused_inputs_total, not logged)")
            }
            false => tracing::debug!(input, source, %reason, "input refused again"),
        }
        first
    }

    /// The counters, for `/metrics`.
    pub(super) fn counts(&self) -> Family<Vec<(&'static str, &'static str)>, Counter> {
        self.counts.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_source_is_logged_once_and_every_refusal_counted() {
        let r = Refusals::default();
        assert!(r.refuse(Input::Head, "peer-a", &"rollback"));
        assert!(!r.refuse(Input::Head, "peer-a", &"rollback"));
        assert!(r.refuse(Input::Head, "peer-b", &"rollback"));
        assert!(r.refuse(Input::ImageSize, "peer-a", &"2^62 bytes"));
        let heads = r.counts().get_or_create(&vec![("input", "head")]).get();
        assert_eq!(heads, 3);
        // The memory is bounded: past it, sources are logged once more.
        for i in 0..MAX_REMEMBERED {
            r.refuse(Input::Head, &format!("flood-{i}"), &"x");
        }
        assert!(r.logged.lock().unwrap().len() <= MAX_REMEMBERED);
        assert!(r.refuse(Input::Head, "peer-a", &"rollback"));
    }
}
