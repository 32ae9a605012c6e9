//! Shared pieces of the benchmark harnesses: peak-heap accounting and writing a
//! result section into `docs/benchmarks.md` without touching the other sections.
#![allow(unsafe_code)] // a GlobalAlloc wrapper is unsafe by definition

use std::{
    alloc::{GlobalAlloc, Layout, System},
    path::Path,
    sync::atomic::{AtomicUsize, Ordering},
};

/// The system allocator, counting live and peak heap bytes.
#[derive(Debug)]
pub struct PeakAlloc;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for PeakAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(live, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

/// Starts a new peak measurement from the current live heap.
pub fn reset_peak() {
    PEAK.store(LIVE.load(Ordering::Relaxed), Ordering::Relaxed);
}

/// Peak heap bytes since the last [`reset_peak`].
pub fn peak_heap() -> usize {
    PEAK.load(Ordering::Relaxed)
}

/// Peak resident set size of this process so far, in bytes.
pub fn max_rss() -> u64 {
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    ru.ru_maxrss as u64 * 1024
}

/// One line describing the machine, for the figures' context.
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|k| k.parse::<u64>().ok())
        })
        .map(|kb| kb / 1024 / 1024)
        .unwrap_or(0);
    format!("{cpu}, {cores} cores, {mem_gib} GiB")
}

/// Replaces the section between `<!-- bench:NAME:start -->` and `<!-- bench:NAME:end -->`
/// in `docs/benchmarks.md` (appending it if missing), leaving other sections alone.
pub fn write_section(doc: &Path, name: &str, body: &str) -> std::io::Result<()> {
    let start = format!("<!-- bench:{name}:start -->");
    let end = format!("<!-- bench:{name}:end -->");
    let old = std::fs::read_to_string(doc).unwrap_or_else(|_| "# Benchmarks\n".into());
    let block = format!("{start}\n{}\n{end}", body.trim_end());
    let new = match (old.find(&start), old.find(&end)) {
        (Some(a), Some(b)) if b > a => format!("{}{}{}", &old[..a], block, &old[b + end.len()..]),
        _ => format!("{}\n{}\n", old.trim_end(), block),
    };
    archy_catalog::fsutil::write_atomic(doc, new.as_bytes())
}
