#!/usr/bin/env bash
# Reconciler benchmark (issue 4, item 7): one node daemon on the process runtime.
#   (a) converge: time from asking for K apps at once (empty node) until all K run healthy;
#   (b) idle: with N apps installed and running, the daemon's CPU over a quiet window (in %
#       of one core) and its RSS. Run as root. `bench/reconciler.sh --help` explains.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

usage() {
	cat <<'EOF'
Usage (as root):
  bench/reconciler.sh [--apps N] [--converge K] [--idle-seconds T] [--json] [--write-docs]

Publishes a signed catalog of N apps (busybox httpd, one shared image, distinct ids and
ports 19100..19100+N-1, HTTP health checks), starts `archy node run --runtime process` on
an empty data dir, then:
  converge: asks for K apps at once through the local API (no client waiting on each) and
            measures until all K are `running` (each passed its health check);
  idle:     installs the remaining N-K, waits until all N run and 10 s more, then samples
            the daemon's CPU time (utime+stime from /proc) over T seconds, and its RSS
            (VmRSS at the end, VmHWM the peak). The daemon's reconciler still runs its
            level-triggered pass every 30 s over all N apps in that window.
Every app is uninstalled and the daemon stopped at the end, also on error or Ctrl-C.

Options:
  --apps N            apps installed for the idle figure (default 50)
  --converge K        apps converged from empty (default 20)
  --idle-seconds T    idle window (default 300)
  --json              one JSON object on stdout instead of the table
  --write-docs        also rewrite the reconciler section of docs/benchmarks.md

Environment:
  ARCHY, CATALOG_SIGNER  binaries (default: <target>/release/{archy,catalog-signer}, built
                         with cargo build --release when missing)
EOF
}

apps=50 converge=20 idle=300 json=0 write_docs=0
while [ $# -gt 0 ]; do
	case "$1" in
	--apps) apps=$2; shift 2 ;;
	--converge) converge=$2; shift 2 ;;
	--idle-seconds) idle=$2; shift 2 ;;
	--json) json=1; shift ;;
	--write-docs) write_docs=1; shift ;;
	-h | --help) usage; exit 0 ;;
	*) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
	esac
done
[ "$(id -u)" = 0 ] || { echo "run as root (the process runtime needs it)" >&2; exit 2; }
[ -x /bin/busybox ] || { echo "needs /bin/busybox (apt-get install busybox-static)" >&2; exit 2; }
[ "$converge" -le "$apps" ] || { echo "--converge must be <= --apps" >&2; exit 2; }

target=${CARGO_TARGET_DIR:-$REPO/target}
archy=${ARCHY:-$target/release/archy}
signer=${CATALOG_SIGNER:-$target/release/catalog-signer}
if [ ! -x "$archy" ] || [ ! -x "$signer" ]; then
	echo "building release binaries..." >&2
	cargo build --release -q -p archy-node --bin archy --manifest-path "$REPO/Cargo.toml"
	cargo build --release -q -p catalog-signer --manifest-path "$REPO/Cargo.toml"
fi

work=$(mktemp -d)
data=$work/node
daemon=
cleanup() {
	if [ -n "$daemon" ] && kill -0 "$daemon" 2>/dev/null; then
		for i in $(seq 1 "$apps"); do api POST "/v1/apps/org.bench.app$i/uninstall" '{"purge":true}' >/dev/null 2>&1 || true; done
		for _ in $(seq 1 100); do [ "$(api GET /v1/apps | grep -c '"id"')" = 0 ] && break; sleep 0.2; done
		kill "$daemon" 2>/dev/null; wait "$daemon" 2>/dev/null || true
	fi
	# Supervisors left behind (only after a failure): killing one ends its app.
	for f in "$data"/process/apps/*/pid; do
		[ -f "$f" ] || continue
		pid=$(grep -o '"pid":[0-9]*' "$f" | cut -d: -f2)
		[ -n "$pid" ] && kill -9 "$pid" 2>/dev/null || true
	done
	rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

api() { # method path [body]
	curl -fsS -m 10 -X "$1" -H "Authorization: Bearer $(cat "$data/api.token")" \
		-H 'content-type: application/json' ${3:+--data "$3"} "http://$(cat "$data/api.addr")$2"
}
running_count() { api GET /v1/apps | grep -o '"phase":"running"' | wc -l; }
now() { date +%s.%N; }

# The publisher: one image, N manifests, a signed catalog.
mkdir -p "$work/rootfs/bin" "$work/rootfs/www" "$work/apps" "$work/keys" "$work/publish"
cp /bin/busybox "$work/rootfs/bin/busybox"
echo "bench app" >"$work/rootfs/www/index.html"
"$archy" app pack "$work/rootfs" --out "$work/apps/app.oci.tar" >/dev/null
for i in $(seq 1 "$apps"); do
	cat >"$work/apps/app$i.yaml" <<EOF
app:
  id: org.bench.app$i
  name: Bench $i
  version: 1.0.0
  description: { short: "benchmark app $i" }
  container:
    image: ./app.oci.tar
    cmd: ["/bin/busybox", "httpd", "-f", "-p", "8080", "-h", "/www"]
    ports: [{ host: $((19100 + i - 1)), container: 8080 }]
  health_check: { type: http, port: 8080, path: /, interval: 1s, retries: 20 }
EOF
done
{
	"$signer" keygen --out "$work/keys/k"
	"$signer" root init --root-key "$work/keys/k.pub" --root-threshold 1 --catalog-key "$work/keys/k.pub" \
		--catalog-threshold 1 --timestamp-key "$work/keys/k.pub" --expires 30d --out "$work/publish/root.json"
	"$signer" sign "$work/publish/root.json" --key "$work/keys/k.key"
	"$signer" catalog build --apps "$work/apps" --version 1 --expires 30d --out "$work/publish/catalog.json" --blobs "$work/publish/blobs"
	"$signer" sign "$work/publish/catalog.json" --key "$work/keys/k.key"
	"$signer" timestamp --catalog "$work/publish/catalog.json" --version 1 --expires 1d --out "$work/publish/timestamp.json"
	"$signer" sign "$work/publish/timestamp.json" --key "$work/keys/k.key"
} >"$work/publish.log" 2>&1 || { cat "$work/publish.log" >&2; exit 2; }

"$archy" node run --data "$data" --name "bench$$" --api 127.0.0.1:0 --runtime process \
	--origin-dir "$work/publish" --root "$work/publish/root.json" >"$work/daemon.log" 2>&1 &
daemon=$!
for _ in $(seq 1 100); do [ -s "$data/api.addr" ] && break; sleep 0.1; done
[ -s "$data/api.addr" ] || { cat "$work/daemon.log" >&2; exit 2; }

wait_running() { # count, bound in seconds
	local deadline=$(($(date +%s) + $2))
	while [ "$(running_count)" -lt "$1" ]; do
		[ "$(date +%s)" -lt "$deadline" ] || { echo "only $(running_count) of $1 apps running after $2 s" >&2; api GET /v1/apps >&2; exit 1; }
		sleep 0.1
	done
}

# (a) converge K apps from empty.
echo "converge: $converge apps..." >&2
t0=$(now)
for i in $(seq 1 "$converge"); do api POST "/v1/apps/org.bench.app$i/install" '{}' >/dev/null; done
wait_running "$converge" 600
t1=$(now)
calc() { awk "BEGIN { printf \"$1\", $2 }"; } # printf format, expression
converge_s=$(calc %.2f "$t1 - $t0")

# (b) idle with N apps.
echo "installing the other $((apps - converge)) apps..." >&2
for i in $(seq $((converge + 1)) "$apps"); do api POST "/v1/apps/org.bench.app$i/install" '{}' >/dev/null; done
wait_running "$apps" 900
sleep 10
ticks=$(getconf CLK_TCK)
cpu() { awk '{print $14 + $15}' "/proc/$daemon/stat"; }
echo "idle: sampling the daemon for $idle s with $apps apps..." >&2
c0=$(cpu)
s0=$(now)
sleep "$idle"
c1=$(cpu)
s1=$(now)
still=$(running_count)
cpu_f=$(calc %.3f "100 * ($c1 - $c0) / $ticks / ($s1 - $s0)")
rss_kib=$(awk '/^VmRSS:/ {print $2}' "/proc/$daemon/status")
hwm_kib=$(awk '/^VmHWM:/ {print $2}' "/proc/$daemon/status")
passes=$(api GET /metrics | awk '/^archy_reconcile_passes_total/ {print $2}')

conv=$converge_s
rss_mib=$(calc %.1f "$rss_kib / 1024")
hwm_mib=$(calc %.1f "$hwm_kib / 1024")
if [ "$json" = 1 ]; then
	printf '{"apps":%d,"converge_apps":%d,"converge_seconds":%s,"idle_seconds":%d,"idle_cpu_percent_of_one_core":%s,"rss_mib":%s,"peak_rss_mib":%s,"apps_running_after_idle":%d,"reconcile_passes":%s}\n' \
		"$apps" "$converge" "$conv" "$idle" "$cpu_f" "$rss_mib" "$hwm_mib" "$still" "${passes:-0}"
else
	printf '%-48s %s\n' "converge $converge apps from empty" "$conv s" \
		"idle CPU of the daemon, $apps apps, $idle s" "$cpu_f % of one core" \
		"daemon RSS (peak)" "$rss_mib MiB ($hwm_mib MiB)" \
		"apps running after the idle window" "$still of $apps"
fi

if [ "$write_docs" = 1 ]; then
	section=$(
		cat <<EOF
<!-- bench:reconciler:start -->
## Reconciler: converge and idle (issue 4)

**What**: one \`archy node run --runtime process\` daemon on an empty data dir, a signed
catalog of $apps busybox-httpd apps (one shared image, HTTP health checks). Converge: $converge
installs asked for at once through the local API, timed until every one is \`running\`
(fetched from the publish dir, verified, unpacked, started, health check passed; the
reconciler works through apps one at a time). Idle: all $apps apps running, then the daemon's
own CPU time (utime+stime) over $idle s, in which its level-triggered pass still runs every
30 s over every app; RSS at the end and its peak. The apps' supervisors are separate
processes and not counted. The daemon's catalog comes from a local publish dir
(\`--origin-dir\`); a daemon with an origin over the swarm also asks it for the head on each
pass, which this figure does not include.

**Command**: \`bench/reconciler.sh --apps $apps --converge $converge --idle-seconds $idle --write-docs\` (as root)  
Machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores, $(awk '/MemTotal/ {printf "%d GiB", $2/1048576}' /proc/meminfo); release build  
Date: $(date -u +%Y-%m-%d)

| figure | result | target |
|---|---|---|
| converge $converge apps from empty | **$conv s** | |
| idle CPU of the daemon with $apps apps over $idle s | **$cpu_f %** of one core | < 1 % |
| daemon RSS at the end of the window (peak) | **$rss_mib MiB** ($hwm_mib MiB) | < 64 MiB |
| apps still running after the window | $still of $apps | all |
<!-- bench:reconciler:end -->
EOF
	)
	doc="$REPO/docs/benchmarks.md"
	if grep -q '<!-- bench:reconciler:start -->' "$doc"; then
		SECTION="$section" perl -0pi -e 's/<!-- bench:reconciler:start -->.*?<!-- bench:reconciler:end -->/$ENV{SECTION}/s' "$doc"
	else
		printf '\n%s\n' "$section" >>"$doc"
	fi
	echo "wrote the reconciler section of docs/benchmarks.md" >&2
fi
[ "$still" -eq "$apps" ]
