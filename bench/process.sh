#!/usr/bin/env bash
# Process runtime benchmark (issue 13): image unpack throughput with every check on, and
# app start time to the app's first instruction, against a baseline revision. As root.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

usage() {
	cat <<'EOF2'
Usage (as root):
  bench/process.sh [--baseline REV] [--write-docs] [-- process-bench options]

Builds `archy` and `process-bench` in release for this tree and runs them (see
bench/src/bin/process-bench.rs: a generated 1 GiB, 8-layer image unpacked by
ProcessRuntime::load_image 3 times; a busybox app started 20 times). With --baseline REV
the same benchmark source is built at REV (a git worktree under the target dir, its own
target dir) and run first, and the table compares both. --write-docs rewrites the
"Process runtime" section of docs/benchmarks.md. Options after `--` go to both runs
(e.g. `-- --unpack-mib 256 --starts 5`).
EOF2
}

baseline="" write_docs=0 extra=()
while [ $# -gt 0 ]; do
	case "$1" in
	--baseline) baseline=$2; shift 2 ;;
	--write-docs) write_docs=1; shift ;;
	-h | --help) usage; exit 0 ;;
	--) shift; extra=("$@"); break ;;
	*) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
	esac
done
[ "$(id -u)" = 0 ] || { echo "run as root (the process runtime needs it)" >&2; exit 2; }
[ -x /bin/busybox ] || { echo "needs /bin/busybox (apt-get install busybox-static)" >&2; exit 2; }

target=${CARGO_TARGET_DIR:-$REPO/target}
echo "building release binaries..." >&2
cargo build --release -q --manifest-path "$REPO/Cargo.toml" -p archy-node --bin archy -p archy-bench --bin process-bench

args=()
if [ -n "$baseline" ]; then
	wt="$target/baseline-worktree"
	rm -rf "$wt"
	git -C "$REPO" worktree prune
	git -C "$REPO" worktree add -q --detach "$wt" "$baseline"
	trap 'git -C "$REPO" worktree remove --force "$wt" >/dev/null 2>&1 || true' EXIT
	# The same benchmark source, built against the baseline's crates.
	cp "$REPO/bench/src/bin/process-bench.rs" "$wt/bench/src/bin/"
	grep -q '^archy-node.workspace' "$wt/bench/Cargo.toml" ||
		sed -i 's/^archy-catalog.workspace = true/archy-catalog.workspace = true\narchy-node.workspace = true\nsha2.workspace = true\ntar.workspace = true/' "$wt/bench/Cargo.toml"
	echo "building the baseline $baseline (release)..." >&2
	CARGO_TARGET_DIR="$target/baseline" cargo build --release -q --manifest-path "$wt/Cargo.toml" \
		-p archy-node --bin archy -p archy-bench --bin process-bench
	base_json="$target/baseline/process-bench.json"
	echo "running the baseline..." >&2
	"$target/baseline/release/process-bench" --archy "$target/baseline/release/archy" --json \
		--label "$(git -C "$REPO" rev-parse --short "$baseline") (baseline)" "${extra[@]}" >"$base_json"
	args+=(--baseline "$base_json" --baseline-label "$baseline")
fi
[ "$write_docs" = 1 ] && args+=(--write-docs "$REPO/docs/benchmarks.md")
echo "running this tree..." >&2
"$target/release/process-bench" --archy "$target/release/archy" \
	--label "$(git -C "$REPO" rev-parse --short HEAD)$(git -C "$REPO" diff --quiet || echo +)" "${args[@]}" "${extra[@]}"
