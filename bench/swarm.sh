#!/usr/bin/env bash
# Swarm benchmark (issue 3, item 7): origin-only HTTP (nginx + curl) vs the Archy swarm
# (archy seed + archy fetch), side by side in one run, on network namespaces with every
# host's uplink capped by tc. Also a single-stream loopback figure (archy fetch vs curl).
# Run as root. `bench/swarm.sh --help` explains; docs/benchmarks.md has the figures.
set -euo pipefail

PROG=bench/swarm.sh
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

usage() {
	cat <<'EOF'
Usage (as root):
  bench/swarm.sh [--nodes N] [--size-mib S] [--uplink-mbit U] [--discovery dht|peers|both] [--json]
  bench/swarm.sh --single-stream [--size-mib S] [--repeat R] [--json]

Swarm mode (default): builds one origin host and N node hosts, each its own network
namespace (archyb-o, archyb-1..N) with a veth into a bridge (namespace archyb-br),
10.77.0.1 for the origin and 10.77.0.(1+i) for node i. Every host's uplink (egress of
its eth0) is capped at U Mbit/s with tc tbf; downlinks are not capped. One S MiB random
blob is published, then measured in one run:
  (a) http:  nginx on the origin serves the blob; all N nodes curl it at once; each copy
             is checked with sha256sum against the source;
  (b) swarm: `archy seed` on the origin holds the blob; all N nodes start
             `archy fetch --seed --json` at once with --origin and either
               dht:   --bootstrap <origin's DHT address> (nodes find each other in the DHT)
               peers: --peer <id@addr> for every other node (ids from `seed --print-id`)
             A node counts as done when it prints its verified summary; afterwards every
             node's store is exported and checked with sha256sum against the source.
For each phase: seconds until the last node holds a verified copy, origin egress bytes
(tx_bytes of the origin's eth0, frames incl. headers, before/after the phase) and
T_min = max(S/U, N*S/((N+1)*U)) (S in bits, U in bit/s, 1 Mbit = 10^6 bit).

Single-stream mode (--single-stream): one namespace with only loopback, no caps; one
S MiB blob (default 1024) node <- origin with `archy fetch` vs `curl` from nginx (both
write the blob to disk), R times each; throughput of each.

Options:
  --nodes N           node hosts (default 8, at most 250)
  --size-mib S        blob size in MiB (default 128; 1024 with --single-stream)
  --uplink-mbit U     uplink cap of every host in Mbit/s (default 100)
  --discovery M       how swarm nodes find each other: dht (default), peers, or both
                      (two swarm phases; swarm_seconds is the better, swarm_discovery says which)
  --piece-kib K       pass --piece-kib K to archy fetch (default: archy's own default)
  --repeat R          single-stream repetitions (default 3)
  --timeout SEC       bound of each phase (default 3 x N*S/U + 60 s)
  --skip-http         swarm phase(s) only
  --keep              keep the temp dir (logs, fetch summaries) for inspection
  --json              print one JSON object on stdout instead of the table
  -h, --help          this text

Environment:
  ARCHY               the archy binary (default: $CARGO_TARGET_DIR/release/archy, else
                      <repo>/target/release/archy; built with
                      `cargo build --release -p archy-node --bin archy` when missing)
  TMPDIR              where the temp dir goes (blob, copies, stores: about (N+3) x S)

Exit status: 0 when every copy verified, 1 when one did not (figures still printed), 2 on a
setup error. Everything (namespaces, processes, temp dir) is removed on exit, also on
Ctrl-C, SIGTERM or error.
EOF
}

NODES=8
SIZE_MIB=""
UPLINK=100
JSON=0
SINGLE=0
DISCOVERY=dht
PIECE_KIB=""
REPEAT=3
TIMEOUT=""
SKIP_HTTP=0
KEEP=0

die() {
	echo "$PROG: $*" >&2
	exit 2
}
log() { echo "[$PROG $(date +%T)] $*" >&2; }

while (($#)); do
	case $1 in
	--nodes) NODES=${2:?}; shift ;;
	--size-mib) SIZE_MIB=${2:?}; shift ;;
	--uplink-mbit) UPLINK=${2:?}; shift ;;
	--discovery) DISCOVERY=${2:?}; shift ;;
	--piece-kib) PIECE_KIB=${2:?}; shift ;;
	--repeat) REPEAT=${2:?}; shift ;;
	--timeout) TIMEOUT=${2:?}; shift ;;
	--single-stream) SINGLE=1 ;;
	--skip-http) SKIP_HTTP=1 ;;
	--keep) KEEP=1 ;;
	--json) JSON=1 ;;
	-h | --help) usage; exit 0 ;;
	*) die "unknown argument $1 (see --help)" ;;
	esac
	shift
done
[[ -z $SIZE_MIB ]] && { ((SINGLE)) && SIZE_MIB=1024 || SIZE_MIB=128; }
[[ $NODES =~ ^[0-9]+$ ]] && ((NODES >= 1 && NODES <= 250)) || die "--nodes must be 1..250"
[[ $SIZE_MIB =~ ^[0-9]+$ ]] && ((SIZE_MIB >= 1)) || die "--size-mib must be a positive integer"
[[ $UPLINK =~ ^[0-9]+$ ]] && ((UPLINK >= 1)) || die "--uplink-mbit must be a positive integer"
[[ $REPEAT =~ ^[0-9]+$ ]] && ((REPEAT >= 1)) || die "--repeat must be a positive integer"
[[ -z $PIECE_KIB || $PIECE_KIB =~ ^[0-9]+$ ]] || die "--piece-kib must be an integer"
[[ -z $TIMEOUT || $TIMEOUT =~ ^[0-9]+$ ]] || die "--timeout must be whole seconds"
case $DISCOVERY in dht | peers | both) ;; *) die "--discovery must be dht, peers or both" ;; esac
((EUID == 0)) || die "must run as root (network namespaces, tc)"
for c in ip tc nginx curl sha256sum jq awk; do
	command -v "$c" >/dev/null || die "$c not found (apt-get install -y iproute2 nginx-light curl jq)"
done

SIZE=$((SIZE_MIB * 1048576))

# The archy binary: $ARCHY, else the release build (built when missing).
if [[ -z ${ARCHY:-} ]]; then
	ARCHY=${CARGO_TARGET_DIR:-$REPO/target}/release/archy
	if [[ ! -x $ARCHY ]]; then
		log "building $ARCHY (cargo build --release -p archy-node --bin archy)"
		(cd "$REPO" && cargo build --release -p archy-node --bin archy) >&2
	fi
fi
[[ -x $ARCHY ]] || die "archy binary $ARCHY not found or not executable"

# ---------------------------------------------------------------------------------------
# Cleanup: every process we start is in PIDS; every namespace starts with archyb-.
PIDS=()
T=""
cleanup() {
	local rc=$? p ns i
	set +e
	trap - EXIT INT TERM
	for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
	for ((i = 0; i < 50; i++)); do
		local alive=0
		for p in "${PIDS[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
		((alive)) || break
		sleep 0.1
	done
	for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null; done
	for ns in $(ip netns list 2>/dev/null | awk '$1 ~ /^archyb-/ {print $1}'); do
		for p in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$p" 2>/dev/null; done
		ip netns del "$ns" 2>/dev/null
	done
	if [[ -n $T && -d $T ]]; then
		if ((KEEP)); then log "kept $T"; else rm -rf "$T"; fi
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT
trap 'log "terminated"; exit 143' TERM

# Namespaces left over by a run that was killed with SIGKILL.
for ns in $(ip netns list 2>/dev/null | awk '$1 ~ /^archyb-/ {print $1}'); do
	log "removing stale namespace $ns"
	for p in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$p" 2>/dev/null || true; done
	ip netns del "$ns"
done

T=$(mktemp -d "${TMPDIR:-/tmp}/archy-swarm-bench.XXXXXX")
chmod 755 "$T"

now() { echo "$EPOCHREALTIME"; }
# fsub A B: A - B with 3 decimals
fsub() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a - b }'; }
calc() { awk "BEGIN { printf \"%.3f\", $1 }"; }

# Busy share of all CPUs between two /proc/stat samples (percent).
cpu_sample() { awk '/^cpu / { t = 0; for (i = 2; i <= NF; i++) t += $i; print t, $5 + $6 }' /proc/stat; }
cpu_busy() { # "$before" "$after"
	awk -v a="$1" -v b="$2" 'BEGIN { split(a, x, " "); split(b, y, " ");
		t = y[1] - x[1]; i = y[2] - x[2]; printf "%.0f", (t > 0 ? 100 * (t - i) / t : 0) }'
}
# CPU seconds (user + system) a live process has used so far.
proc_cpu() {
	local tck
	tck=$(getconf CLK_TCK)
	awk -v t="$tck" '{ sub(/^.*\) /, ""); printf "%.2f", ($12 + $13) / t }' "/proc/$1/stat" 2>/dev/null || echo 0
}

# Wait until the file has a complete first line (`{...}`), the process exits, or the
# deadline passes. Prints "ok", "exit" or "timeout".
wait_line() { # file pid deadline(epoch)
	local f=$1 pid=$2 deadline=$3 line
	while :; do
		if [[ -s $f ]]; then
			IFS= read -r line <"$f" || true
			[[ $line == *"}" ]] && { echo ok; return; }
		fi
		kill -0 "$pid" 2>/dev/null || {
			[[ -s $f ]] && IFS= read -r line <"$f" && [[ $line == *"}" ]] && { echo ok; return; }
			echo exit; return
		}
		(($(awk -v n="$EPOCHREALTIME" -v d="$deadline" 'BEGIN { print (n > d) }'))) && { echo timeout; return; }
		sleep 0.1
	done
}

# Stop processes (TERM, then KILL after 10 s) and drop them from PIDS.
stop() {
	local p i alive
	for p in "$@"; do kill -TERM "$p" 2>/dev/null || true; done
	for ((i = 0; i < 100; i++)); do
		alive=0
		for p in "$@"; do kill -0 "$p" 2>/dev/null && alive=1; done
		((alive)) || break
		sleep 0.1
	done
	for p in "$@"; do kill -KILL "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
	local keep=() q drop
	for q in "${PIDS[@]}"; do
		drop=0
		for p in "$@"; do [[ $q == "$p" ]] && drop=1; done
		((drop)) || keep+=("$q")
	done
	PIDS=("${keep[@]}")
}

make_blob() { # path
	log "writing a $SIZE_MIB MiB random blob"
	head -c "$SIZE" /dev/urandom >"$1"
	chmod 644 "$1"
	SRC_SHA=$(sha256sum "$1" | cut -d' ' -f1)
}

# nginx in namespace $1 listening on $2, serving $T/www; sets NGINX_PID.
start_nginx() { # ns listen
	mkdir -p "$T/nginx"
	cat >"$T/nginx/nginx.conf" <<EOF
user root root;
worker_processes 2;
daemon off;
master_process on;
pid $T/nginx/nginx.pid;
error_log $T/nginx/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_timeout 5;
  default_type application/octet-stream;
  client_body_temp_path $T/nginx/body;
  proxy_temp_path $T/nginx/proxy;
  server {
    listen $2;
    root $T/www;
  }
}
EOF
	ip netns exec "$1" nginx -e "$T/nginx/error.log" -p "$T/nginx" -c "$T/nginx/nginx.conf" \
		>"$T/nginx/stdout" 2>&1 &
	NGINX_PID=$!
	PIDS+=("$NGINX_PID")
	local i
	for ((i = 0; i < 100; i++)); do
		ip netns exec "$1" curl -sf -o /dev/null "http://$2/ping" && return
		kill -0 "$NGINX_PID" 2>/dev/null || die "nginx failed: $(cat "$T/nginx/error.log")"
		sleep 0.1
	done
	die "nginx did not answer on $2 within 10 s: $(cat "$T/nginx/error.log")"
}

# `archy seed` in namespace $1 on $2 (UDP) with the DHT on $3 (TCP, or "" for none),
# holding $T/www/blob; sets SEED_PID, ORIGIN_ADDR, ORIGIN_DHT, HASH.
start_seed() { # ns listen dht-listen datadir
	local ns=$1 listen=$2 dht=$3 data=$4 args out=$4.out
	rm -rf "$data"
	args=(seed --data "$data" --listen "$listen" --import "$T/www/blob" --json)
	[[ -n $dht ]] && args+=(--dht --dht-listen "$dht")
	ip netns exec "$ns" "$ARCHY" "${args[@]}" >"$out" 2>"$data.err" &
	SEED_PID=$!
	PIDS+=("$SEED_PID")
	local r
	r=$(wait_line "$out" "$SEED_PID" "$(calc "$(now) + 120 + $SIZE_MIB / 20")")
	[[ $r == ok ]] || die "archy seed not ready ($r): $(tail -5 "$data.err")"
	ORIGIN_ADDR=$(head -n1 "$out" | jq -r .addr)
	ORIGIN_DHT=$(head -n1 "$out" | jq -r '.dht[0] // ""')
	HASH=$(head -n1 "$out" | jq -r '.blobs[0]')
	[[ -n $HASH && $HASH != null ]] || die "archy seed holds no blob: $(cat "$out")"
}

# Exports a fetcher's copy from its store (no network) and compares its sha256 with the
# source; prints 1 or 0.
check_store() { # datadir
	local copy="$T/check.blob" ok=0
	rm -f "$copy"
	if timeout 300 "$ARCHY" fetch "$HASH" --data "$1" --size "$SIZE" --out "$copy" --json \
		>"$1.check" 2>&1 && [[ $(sha256sum "$copy" | cut -d' ' -f1) == "$SRC_SHA" ]]; then
		ok=1
	fi
	rm -f "$copy"
	echo "$ok"
}

# ---------------------------------------------------------------------------------------
# Single-stream mode: loopback only, no caps.
if ((SINGLE)); then
	NS=archyb-ss
	ip netns add "$NS"
	ip -n "$NS" link set lo up
	mkdir -p "$T/www"
	echo pong >"$T/www/ping"
	make_blob "$T/www/blob"
	start_nginx "$NS" 127.0.0.1:8080
	log "importing the blob into archy seed"
	start_seed "$NS" 127.0.0.1:7000 "" "$T/origin"
	load=$(cut -d' ' -f1-3 /proc/loadavg)
	curl_s=() archy_s=() archy_inner=() ss_ok=1
	for ((r = 1; r <= REPEAT; r++)); do
		rm -f "$T/curl.blob"
		sync
		t0=$(now)
		timeout 600 ip netns exec "$NS" curl -sS -o "$T/curl.blob" http://127.0.0.1:8080/blob \
			|| die "curl failed"
		t1=$(now)
		curl_s+=("$(fsub "$t1" "$t0")")
		[[ $(sha256sum "$T/curl.blob" | cut -d' ' -f1) == "$SRC_SHA" ]] || ss_ok=0
		rm -f "$T/curl.blob"
		log "curl run $r: ${curl_s[-1]} s"

		d="$T/fetch-$r"
		rm -rf "$d"
		"$ARCHY" seed --data "$d" --print-id >/dev/null # key outside the timing
		sync
		args=(fetch "$HASH" --data "$d" --listen 127.0.0.1:7100 --size "$SIZE" --origin "$ORIGIN_ADDR" --json)
		[[ -n $PIECE_KIB ]] && args+=(--piece-kib "$PIECE_KIB")
		t0=$(now)
		timeout 600 ip netns exec "$NS" "$ARCHY" "${args[@]}" >"$d.out" 2>"$d.err" \
			|| die "archy fetch failed: $(cat "$d.out") $(tail -5 "$d.err")"
		t1=$(now)
		archy_s+=("$(fsub "$t1" "$t0")")
		archy_inner+=("$(jq -r .seconds "$d.out")")
		[[ $(jq -r .verified "$d.out") == true && $(check_store "$d") == 1 ]] || ss_ok=0
		rm -rf "$d"
		log "archy fetch run $r: ${archy_s[-1]} s (its own timer: ${archy_inner[-1]} s)"
	done
	median() { printf '%s\n' "$@" | sort -g | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
	best() { printf '%s\n' "$@" | sort -g | head -n1; }
	cm=$(median "${curl_s[@]}") am=$(median "${archy_s[@]}")
	cb=$(best "${curl_s[@]}") ab=$(best "${archy_s[@]}")
	cmibs=$(calc "$SIZE_MIB / $cm") amibs=$(calc "$SIZE_MIB / $am")
	ratio=$(calc "$cm / $am")
	if ((JSON)); then
		jq -cn --argjson size "$SIZE" --argjson repeat "$REPEAT" \
			--argjson curl "$(printf '%s\n' "${curl_s[@]}" | jq -s .)" \
			--argjson archy "$(printf '%s\n' "${archy_s[@]}" | jq -s .)" \
			--argjson archy_inner "$(printf '%s\n' "${archy_inner[@]}" | jq -s .)" \
			--argjson cm "$cm" --argjson am "$am" --argjson cmibs "$cmibs" --argjson amibs "$amibs" \
			--argjson ratio "$ratio" --argjson ok "$ss_ok" --arg load "$load" '{
			mode: "single-stream", size_bytes: $size, repeat: $repeat,
			curl_seconds: $curl, archy_seconds: $archy, archy_fetch_own_seconds: $archy_inner,
			curl_median_seconds: $cm, archy_median_seconds: $am,
			curl_mib_per_s: $cmibs, archy_mib_per_s: $amibs, archy_vs_curl: $ratio,
			all_verified: ($ok == 1), loadavg_at_start: $load }'
	else
		printf 'single stream, %d MiB on loopback, %d runs each (load average at start: %s)\n' "$SIZE_MIB" "$REPEAT" "$load"
		printf '  curl + nginx : median %6.2f s = %7.1f MiB/s  (best %s s; runs: %s)\n' "$cm" "$cmibs" "$cb" "${curl_s[*]}"
		printf '  archy fetch  : median %6.2f s = %7.1f MiB/s  (best %s s; runs: %s)\n' "$am" "$amibs" "$ab" "${archy_s[*]}"
		printf '  archy / curl throughput: %.2f  (target >= 0.5); every copy verified: %s\n' "$ratio" "$( ((ss_ok)) && echo yes || echo NO)"
	fi
	((ss_ok)) && exit 0 || exit 1
fi

# ---------------------------------------------------------------------------------------
# Swarm mode.
OIP=10.77.0.1
node_ip() { echo "10.77.0.$((1 + $1))"; }
HOSTS=(o $(seq 1 "$NODES"))
BITS=$((SIZE * 8))
BPS=$((UPLINK * 1000000))
TMIN=$(awk -v s="$BITS" -v u="$BPS" -v n="$NODES" 'BEGIN { a = s / u; b = n * s / ((n + 1) * u); printf "%.3f", (a > b ? a : b) }')
[[ -z $TIMEOUT ]] && TIMEOUT=$(awk -v s="$BITS" -v u="$BPS" -v n="$NODES" 'BEGIN { printf "%d", 3 * n * s / u + 60 }')
# tbf bucket: 10 ms at the rate, at least 64 KiB (a GSO frame); queue: 100 ms.
BURST=$((BPS / 8 / 100))
((BURST < 65536)) && BURST=65536

log "network: origin + $NODES nodes, uplinks $UPLINK Mbit/s (tbf burst $BURST B), T_min $TMIN s, phase timeout $TIMEOUT s"
ip netns add archyb-br
ip -n archyb-br link add br0 type bridge stp_state 0 forward_delay 0
ip -n archyb-br link set br0 up
for h in "${HOSTS[@]}"; do
	ns=archyb-$h
	[[ $h == o ]] && addr=$OIP || addr=$(node_ip "$h")
	ip netns add "$ns"
	ip -n archyb-br link add "vb-$h" type veth peer name eth0 netns "$ns"
	ip -n archyb-br link set "vb-$h" master br0
	ip -n archyb-br link set "vb-$h" up
	ip -n "$ns" link set lo up
	ip -n "$ns" addr add "$addr/24" dev eth0
	ip -n "$ns" link set eth0 up
	ip netns exec "$ns" tc qdisc add dev eth0 root tbf rate "${UPLINK}mbit" burst "$BURST" latency 100ms
done
tx_origin() { ip netns exec archyb-o cat /sys/class/net/eth0/statistics/tx_bytes; }

mkdir -p "$T/www"
echo pong >"$T/www/ping"
make_blob "$T/www/blob"
start_nginx archyb-o "$OIP:80"
for i in $(seq 1 "$NODES"); do # every node reaches the origin before anything is timed
	ok=0
	for ((k = 0; k < 50; k++)); do
		ip netns exec "archyb-$i" curl -sf -o /dev/null --max-time 2 "http://$OIP/ping" && { ok=1; break; }
		sleep 0.1
	done
	((ok)) || die "node $i cannot reach the origin"
done
LOAD=$(cut -d' ' -f1-3 /proc/loadavg)

# (a) origin-only HTTP ------------------------------------------------------------------
HTTP_SECONDS=null HTTP_EGRESS=null HTTP_OK=1 HTTP_NODES="[]" HTTP_CPU=null
if ((!SKIP_HTTP)); then
	log "http: $NODES x curl http://$OIP/blob at once"
	pids=()
	c0=$(cpu_sample)
	tx0=$(tx_origin)
	t0=$(now)
	for i in $(seq 1 "$NODES"); do
		ip netns exec "archyb-$i" curl -sS --max-time "$TIMEOUT" -o "$T/http-$i.blob" \
			"http://$OIP/blob" >"$T/http-$i.out" 2>"$T/http-$i.err" &
		pids+=($!)
		PIDS+=($!)
	done
	deadline=$(calc "$t0 + $TIMEOUT + 5")
	declare -A HTTP_T=()
	left=$NODES
	while ((left > 0)); do
		for i in $(seq 1 "$NODES"); do
			[[ -n ${HTTP_T[$i]:-} ]] && continue
			if ! kill -0 "${pids[i - 1]}" 2>/dev/null; then
				HTTP_T[$i]=$(fsub "$(now)" "$t0")
				left=$((left - 1))
			fi
		done
		(($(awk -v n="$EPOCHREALTIME" -v d="$deadline" 'BEGIN { print (n > d) }'))) && break
		if ((left > 0)); then sleep 0.1; fi
	done
	t1=$(now)
	tx1=$(tx_origin)
	c1=$(cpu_sample)
	HTTP_CPU=$(cpu_busy "$c0" "$c1")
	stop "${pids[@]}"
	HTTP_SECONDS=$(fsub "$t1" "$t0")
	HTTP_EGRESS=$((tx1 - tx0))
	HTTP_NODES="["
	for i in $(seq 1 "$NODES"); do
		ok=0
		if [[ -n ${HTTP_T[$i]:-} && -f $T/http-$i.blob ]] &&
			[[ $(sha256sum "$T/http-$i.blob" | cut -d' ' -f1) == "$SRC_SHA" ]]; then ok=1; fi
		((ok)) || { HTTP_OK=0; log "http node $i: copy missing or wrong ($(cat "$T/http-$i.err"))"; }
		rm -f "$T/http-$i.blob"
		HTTP_NODES+="{\"node\":$i,\"seconds\":${HTTP_T[$i]:-null},\"verified\":$( ((ok)) && echo true || echo false)},"
	done
	HTTP_NODES="${HTTP_NODES%,}]"
	log "http: $HTTP_SECONDS s, origin egress $HTTP_EGRESS B, all verified: $HTTP_OK, cpu busy ${HTTP_CPU}%"
fi
stop "$NGINX_PID"

# (b) swarm ------------------------------------------------------------------------------
# Node ids up front (the key is created outside the timing; in peers mode every node is
# given all the others).
declare -A NODE_OF=() # endpoint id -> node name
swarm_phase() { # mode -> sets S_SECONDS S_EGRESS S_OK S_NODES S_CPU S_PROC_CPU
	local mode=$1 i j d ids=() args pids=() r
	start_seed archyb-o "$OIP:7000" "$OIP:7001" "$T/origin"
	NODE_OF=(["${ORIGIN_ADDR%@*}"]=origin)
	for i in $(seq 1 "$NODES"); do
		d="$T/swarm-$mode-$i"
		rm -rf "$d"
		ids[i]=$("$ARCHY" seed --data "$d" --print-id)
		NODE_OF[${ids[i]}]=$i
	done
	log "swarm ($mode): $NODES x archy fetch --seed at once, origin $ORIGIN_ADDR${ORIGIN_DHT:+, DHT $ORIGIN_DHT}"
	local c0 c1 tx0 tx1 t0 t1 deadline
	c0=$(cpu_sample)
	tx0=$(tx_origin)
	t0=$(now)
	for i in $(seq 1 "$NODES"); do
		d="$T/swarm-$mode-$i"
		args=(fetch "$HASH" --data "$d" --listen "$(node_ip "$i"):7000" --size "$SIZE"
			--origin "$ORIGIN_ADDR" --seed --json)
		[[ -n $PIECE_KIB ]] && args+=(--piece-kib "$PIECE_KIB")
		if [[ $mode == dht ]]; then
			args+=(--bootstrap "$ORIGIN_DHT" --dht-listen "$(node_ip "$i"):7001")
		else
			for j in $(seq 1 "$NODES"); do
				((j == i)) || args+=(--peer "${ids[j]}@$(node_ip "$j"):7000")
			done
		fi
		ip netns exec "archyb-$i" "$ARCHY" "${args[@]}" >"$d.out" 2>"$d.err" &
		pids[i]=$!
		PIDS+=($!)
	done
	deadline=$(calc "$t0 + $TIMEOUT")
	local -A done_t=() cpu=()
	local left=$NODES line
	while ((left > 0)); do
		for i in $(seq 1 "$NODES"); do
			[[ -n ${done_t[$i]:-} ]] && continue
			d="$T/swarm-$mode-$i"
			line=""
			[[ -s $d.out ]] && { IFS= read -r line <"$d.out" || true; }
			if [[ $line == *"}" ]]; then
				done_t[$i]=$(fsub "$(now)" "$t0")
				cpu[$i]=$(proc_cpu "${pids[i]}")
				left=$((left - 1))
			elif ! kill -0 "${pids[i]}" 2>/dev/null; then
				done_t[$i]=failed
				left=$((left - 1))
				log "swarm node $i exited without a summary: $(tail -3 "$d.err")"
			fi
		done
		(($(awk -v n="$EPOCHREALTIME" -v d="$deadline" 'BEGIN { print (n > d) }'))) && {
			log "swarm ($mode): timeout after $TIMEOUT s with $left node(s) not done"
			break
		}
		if ((left > 0)); then sleep 0.1; fi
	done
	t1=$(now)
	tx1=$(tx_origin)
	c1=$(cpu_sample)
	S_CPU=$(cpu_busy "$c0" "$c1")
	local seed_cpu
	seed_cpu=$(proc_cpu "$SEED_PID")
	stop "${pids[@]}" "$SEED_PID"
	S_SECONDS=$(fsub "$t1" "$t0")
	S_EGRESS=$((tx1 - tx0))
	S_OK=1
	S_NODES="["
	local sum_cpu=$seed_cpu
	for i in $(seq 1 "$NODES"); do
		d="$T/swarm-$mode-$i"
		local ok=0 from_origin=0 from_peers=0 summary="{}" by="{}"
		line=""
		[[ -s $d.out ]] && { IFS= read -r line <"$d.out" || true; }
		if [[ $line == *"}" ]] && [[ $(jq -r .verified <<<"$line") == true ]]; then
			summary=$line
			[[ $(check_store "$d") == 1 ]] && ok=1
		fi
		((ok)) || { S_OK=0; log "swarm node $i: no verified copy (${line:-no summary}; $(tail -2 "$d.err"))"; }
		# bytes_by_provider keyed by node name instead of id@addr
		by=$(jq -c --argjson names "$(for k in "${!NODE_OF[@]}"; do printf '%s\n%s\n' "$k" "${NODE_OF[$k]}"; done |
			jq -Rn '[inputs] | [range(0; length; 2) as $i | {(.[$i]): .[$i + 1]}] | add')" \
			'(.bytes_by_provider // {}) | with_entries(.key |= ($names[split("@")[0]] // .))' <<<"$summary")
		from_origin=$(jq '.origin // 0' <<<"$by")
		from_peers=$(jq '[to_entries[] | select(.key != "origin") | .value] | add // 0' <<<"$by")
		sum_cpu=$(calc "$sum_cpu + ${cpu[$i]:-0}")
		S_NODES+=$(jq -c -n --argjson n "$i" --arg t "${done_t[$i]:-}" --argjson ok "$ok" \
			--argjson o "$from_origin" --argjson p "$from_peers" --argjson by "$by" \
			--argjson s "$summary" --arg cpu "${cpu[$i]:-}" \
			'{node: $n, seconds: ($t | tonumber? // null), verified: ($ok == 1),
			  fetch_seconds: ($s.seconds // null), from_origin: $o, from_peers: $p,
			  bytes_by_provider: $by, failed_providers: ($s.failed_providers // {} | length),
			  cpu_seconds: ($cpu | tonumber? // null)}')","
	done
	S_NODES="${S_NODES%,}]"
	S_PROC_CPU=$sum_cpu
	S_SEED_CPU=$seed_cpu
	log "swarm ($mode): $S_SECONDS s, origin egress $S_EGRESS B, all verified: $S_OK, cpu busy ${S_CPU}%, archy cpu ${S_PROC_CPU} s"
	rm -rf "$T"/swarm-"$mode"-*/ # stores; keep the .out/.err logs
}

declare -A RES=()
MODES=()
[[ $DISCOVERY == both ]] && MODES=(dht peers) || MODES=("$DISCOVERY")
for m in "${MODES[@]}"; do
	swarm_phase "$m"
	RES[$m]=$(jq -cn --arg mode "$m" --argjson s "$S_SECONDS" --argjson e "$S_EGRESS" \
		--argjson ok "$S_OK" --argjson nodes "$S_NODES" --argjson cpu "$S_CPU" \
		--argjson pcpu "$S_PROC_CPU" --argjson scpu "$S_SEED_CPU" \
		'{discovery: $mode, seconds: $s, origin_egress_bytes: $e, all_verified: ($ok == 1),
		  cpu_busy_pct: $cpu, archy_cpu_seconds: $pcpu, origin_seed_cpu_seconds: $scpu, nodes: $nodes}')
done
BEST=${MODES[0]}
for m in "${MODES[@]}"; do
	if [[ $(jq .all_verified <<<"${RES[$m]}") == true ]] &&
		{ [[ $(jq .all_verified <<<"${RES[$BEST]}") != true ]] ||
			(($(awk -v a="$(jq .seconds <<<"${RES[$m]}")" -v b="$(jq .seconds <<<"${RES[$BEST]}")" 'BEGIN { print (a < b) }'))); }; then
		BEST=$m
	fi
done

OUT=$(jq -n --argjson nodes "$NODES" --argjson size "$SIZE" --argjson u "$UPLINK" \
	--argjson tmin "$TMIN" --argjson hs "$HTTP_SECONDS" --argjson he "$HTTP_EGRESS" \
	--argjson hok "$HTTP_OK" --argjson hn "$HTTP_NODES" --argjson hcpu "$HTTP_CPU" \
	--argjson best "${RES[$BEST]}" \
	--argjson runs "$(for m in "${MODES[@]}"; do echo "${RES[$m]}"; done | jq -s .)" \
	--arg load "$LOAD" --arg piece "$PIECE_KIB" '{
	nodes: $nodes, size_bytes: $size, uplink_mbit: $u, t_min_seconds: $tmin,
	http_seconds: $hs, http_origin_egress_bytes: $he, http_all_verified: ($hok == 1),
	swarm_seconds: $best.seconds, swarm_origin_egress_bytes: $best.origin_egress_bytes,
	swarm_discovery: $best.discovery, swarm_all_verified: $best.all_verified,
	all_verified: (($hok == 1) and $best.all_verified),
	swarm_vs_t_min: (($best.seconds / $tmin * 100 | round) / 100),
	swarm_egress_vs_size: (($best.origin_egress_bytes / $size * 100 | round) / 100),
	http_vs_t_min: (if $hs == null then null else ($hs / $tmin * 100 | round) / 100 end),
	http_cpu_busy_pct: $hcpu, piece_kib: ($piece | tonumber? // null),
	loadavg_at_start: $load, http_nodes: $hn, swarm_runs: $runs }')

ALL_OK=$(jq .all_verified <<<"$OUT")
if ((JSON)); then
	jq -c . <<<"$OUT"
	[[ $ALL_OK == true ]] && exit 0 || exit 1
fi
mib() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }
printf 'swarm benchmark: N=%d nodes, S=%d MiB, uplink U=%d Mbit/s, T_min=%.2f s (load average at start: %s)\n\n' \
	"$NODES" "$SIZE_MIB" "$UPLINK" "$TMIN" "$LOAD"
printf '%-16s %9s %8s %18s %7s %9s %9s\n' phase seconds "x T_min" "origin egress MiB" "x S" verified "cpu busy"
if [[ $HTTP_SECONDS != null ]]; then
	printf '%-16s %9.2f %8.2f %18s %7.2f %9s %8s%%\n' "http (nginx)" "$HTTP_SECONDS" "$(calc "$HTTP_SECONDS / $TMIN")" \
		"$(mib "$HTTP_EGRESS")" "$(calc "$HTTP_EGRESS / $SIZE")" "$( ((HTTP_OK)) && echo yes || echo NO)" "$HTTP_CPU"
fi
for m in "${MODES[@]}"; do
	r=${RES[$m]}
	s=$(jq .seconds <<<"$r") e=$(jq .origin_egress_bytes <<<"$r")
	printf '%-16s %9.2f %8.2f %18s %7.2f %9s %8s%%\n' "swarm ($m)" "$s" "$(calc "$s / $TMIN")" "$(mib "$e")" \
		"$(calc "$e / $SIZE")" "$(jq -r 'if .all_verified then "yes" else "NO" end' <<<"$r")" "$(jq .cpu_busy_pct <<<"$r")"
done
echo
echo "targets: swarm <= 1.3 x T_min, origin egress <= 1.5 x S, every copy verified"
for m in "${MODES[@]}"; do
	echo
	echo "swarm ($m) per node: done at (s), MiB from origin / from peers, dropped providers, cpu s"
	jq -r '.nodes[] | "  node \(.node): \(.seconds) s, \(.from_origin / 1048576 * 10 | round / 10) / \(.from_peers / 1048576 * 10 | round / 10) MiB, dropped \(.failed_providers), cpu \(.cpu_seconds)"' <<<"${RES[$m]}"
	jq -r '"  origin seed cpu \(.origin_seed_cpu_seconds) s; all archy processes \(.archy_cpu_seconds) cpu s"' <<<"${RES[$m]}"
done
[[ $ALL_OK == true ]] || exit 1
