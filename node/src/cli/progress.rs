//! One progress display for long transfers, used by `archy fetch` and `archy app
//! install`: `fetch [=====>    ] 45.2/128.0 MiB 12.3 MiB/s ETA 8s  origin 40% · peer 3f2a 60%`.
//!
//! On a terminal it is an `indicatif` bar redrawn in place; otherwise (a log, a CI run)
//! the same figures are printed as one plain line a second.

use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// `12.3 MiB`.
pub fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1 << 20) as f64)
}

/// `origin 40% · peer 3f2a 60%`: each source's share of the bytes received.
pub fn shares<'a>(received: impl IntoIterator<Item = (String, &'a u64)>) -> String {
    let received: Vec<(String, u64)> = received
        .into_iter()
        .filter(|(_, b)| **b > 0)
        .map(|(name, b)| (name, *b))
        .collect();
    let total: u64 = received.iter().map(|(_, b)| b).sum();
    received
        .iter()
        .map(|(name, b)| format!("{name} {:.0}%", 100.0 * *b as f64 / total.max(1) as f64))
        .collect::<Vec<_>>()
        .join(" · ")
}

/// A byte-count progress display on stderr.
#[derive(Debug)]
pub struct ByteProgress {
    label: String,
    bar: Option<ProgressBar>,
    started: Instant,
    last_line: Option<Instant>,
}

impl ByteProgress {
    /// A display for `total` bytes, its lines starting with `label` (e.g. `fetch`).
    pub fn new(label: &str, total: u64) -> Self {
        use std::io::IsTerminal;
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template(
                    "{prefix:<8} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}  {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            bar.set_prefix(label.to_string());
            bar
        });
        Self {
            label: label.to_string(),
            bar,
            started: Instant::now(),
            last_line: None,
        }
    }

    /// `done` of `total` bytes verified; `shares` says where they came from.
    pub fn update(&mut self, done: u64, total: u64, shares: &str) {
        if let Some(bar) = &self.bar {
            bar.set_length(total);
            bar.set_position(done);
            bar.set_message(shares.to_string());
            return;
        }
        let last = done >= total;
        if self
            .last_line
            .is_some_and(|t| t.elapsed() < Duration::from_secs(1))
            && !last
        {
            return;
        }
        self.last_line = Some(Instant::now());
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        let rate = done as f64 / secs;
        let eta = match rate > 0.0 {
            true => format!("{:.0}s", total.saturating_sub(done) as f64 / rate),
            false => "?".into(),
        };
        let width = 30;
        let filled = ((width as f64 * done as f64 / total.max(1) as f64) as usize).min(width);
        eprintln!(
            "  {:<8} [{}>{}] {}/{} {}/s ETA {eta}  {shares}",
            self.label,
            "=".repeat(filled),
            " ".repeat(width - filled),
            mib(done),
            mib(total),
            mib(rate as u64),
        );
    }

    /// Ends the display (the bar stays on screen with its final figures).
    pub fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish();
        }
    }
}
