#!/usr/bin/env bash
# Marketplace benchmark: ingest, verify and score N announcements from a local relay.
# Usage: scripts/bench-market.sh [N=10000] [RUNS=3]
# Starts `archy relay run` (in memory) on 127.0.0.1, seeds it, then runs `sync` RUNS
# times, each in a fresh process, printing one JSON line per run (seconds, peak RSS).
set -euo pipefail
N="${1:-10000}"
RUNS="${2:-3}"
cd "$(dirname "$0")/.."
cargo build --release -q -p archy-node --bin archy
cargo build --release -q -p archy-discovery --example market_bench
BIN=target/release
OUT="$(mktemp)"
"$BIN/archy" relay run --listen 127.0.0.1:0 >"$OUT" 2>/dev/null &
RELAY_PID=$!
trap 'kill "$RELAY_PID" 2>/dev/null || true; rm -f "$OUT"' EXIT
for _ in $(seq 1 100); do
  grep -q '^relay listening on' "$OUT" && break
  sleep 0.1
done
URL="$(grep -o 'ws://[0-9.:]*' "$OUT")"
echo "relay $URL; cores: $(nproc); $(uname -srm)" >&2
ME="$("$BIN/examples/market_bench" seed --relay "$URL" --announcements "$N")"
for _ in $(seq 1 "$RUNS"); do
  "$BIN/examples/market_bench" sync --relay "$URL" --me "$ME"
done
