#!/usr/bin/env bash
# Dashboard benchmark (issue 17): page times on a node with 100 apps and a 5,000-app
# marketplace, page weight, and click Install to first progress on screen in chromium.
# Run as root. `bench/dashboard.sh --help` explains; docs/benchmarks.md has the figures.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

usage() {
	cat <<'EOF2'
Usage (as root):
  bench/dashboard.sh [--write-docs] [-- dashboard-bench options]

Builds `archy`, the `market_bench` example and `dashboard-bench` in release, then runs
dashboard-bench (see bench/src/bin/dashboard-bench.rs): a node daemon on the process
runtime with --apps N (default 100) busybox apps running, a relay seeded with
--announcements M (default 10000: 5,000 apps), every dashboard page fetched
--requests R times (default 30), and --clicks K (default 5) Install clicks in headless
chromium. --write-docs rewrites the dashboard section of docs/benchmarks.md. Options
after `--` go to dashboard-bench (e.g. `-- --apps 20 --announcements 1000`).
Needs /bin/busybox, chromium and chromedriver (apt-get install busybox-static chromium
chromium-driver).
EOF2
}

write_docs=0 extra=()
while [ $# -gt 0 ]; do
	case "$1" in
	--write-docs) write_docs=1; shift ;;
	-h | --help) usage; exit 0 ;;
	--) shift; extra=("$@"); break ;;
	*) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
	esac
done
[ "$(id -u)" = 0 ] || { echo "run as root (the process runtime needs it)" >&2; exit 2; }
for tool in /bin/busybox chromium chromedriver; do
	command -v "$tool" >/dev/null || { echo "needs $tool (apt-get install busybox-static chromium chromium-driver)" >&2; exit 2; }
done

target=${CARGO_TARGET_DIR:-$REPO/target}
echo "building release binaries..." >&2
cargo build --release -q --manifest-path "$REPO/Cargo.toml" -p archy-node --bin archy -p archy-bench --bin dashboard-bench
cargo build --release -q --manifest-path "$REPO/Cargo.toml" -p archy-discovery --example market_bench

args=(--archy "$target/release/archy" --market-bench "$target/release/examples/market_bench")
[ "$write_docs" = 1 ] && args+=(--write-docs "$REPO/docs/benchmarks.md")
exec "$target/release/dashboard-bench" "${args[@]}" "${extra[@]}"
