#!/usr/bin/env bash
# NAT bench (issue 16, item 5): home nodes behind NAT routers fetch one blob from an
# origin on a "public" network, through the origin's relay and each other. Network
# namespaces, veth pairs, iptables MASQUERADE and tc, all on this machine.
# Run as root. `bench/nat.sh --help` explains; docs/benchmarks.md has the figures.
set -euo pipefail

PROG=bench/nat.sh
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

usage() {
	cat <<'EOF'
Usage (as root):
  bench/nat.sh [--nodes N] [--size-kib S] [--uplink-mbit U] [--timeout SEC] [--json] [--keep]

Builds, each in its own network namespace (names start with archyn-):
  public network 198.18.0.0/24 (a bridge; the benchmarking range, not a private
      address, so peers judge addresses as on the internet): the origin host
      198.18.0.1, which runs `archy seed` holding the blob, a DHT node and the
      relay (--relay-listen);
  home 1 behind router r1 (WAN 198.18.0.11, LAN 192.168.1.0/24): iptables MASQUERADE,
      which keeps a mapping per source port whoever the destination (endpoint-
      independent mapping: holes can be punched);
  home 2 behind router r2 (WAN 198.18.0.12, LAN 192.168.2.0/24): MASQUERADE
      --random-fully, a new port per destination (symmetric NAT: no hole punching);
  N node hosts in each home (192.168.H.11...). Routers forward only what the LAN
  started; nothing on the public network can reach a home address.
The origin's and both routers' uplinks are capped at U Mbit/s (tc tbf).

All 2N nodes start `archy fetch --seed --json` at once with the origin's address, its
DHT address (--bootstrap) and its relay (--iroh-relay <origin>/relay.json); they find
each other in the DHT. Per node it reports: verified, seconds, bytes from the origin,
from LAN peers, from peers in the other home (direct or relayed, by the path the node
had to each peer at the end), and for the run: origin egress bytes (its uplink, relay
traffic included) and T_min = 2 x S / U (each home's uplink-limited share: the blob
must cross the origin's uplink at least once per home in the best case, so
max(2S/U_origin, ...) = 2S/U).

Options:
  --nodes N        nodes per home (default 4, at most 50)
  --size-kib S     blob size in KiB (default 65536 = 64 MiB)
  --uplink-mbit U  uplink cap in Mbit/s (default 100)
  --timeout SEC    bound of the run (default 4 x T_min + 60 s)
  --keep           keep the temp dir (logs, summaries)
  --json           one JSON object on stdout instead of the table
  -h, --help       this text

Environment:
  ARCHY            the archy binary (default: $CARGO_TARGET_DIR/release/archy, else
                   <repo>/target/release/archy; built when missing)

Exit status: 0 when every node verified the blob, 1 when one did not (figures still
printed), 2 on a setup error. Namespaces, processes and the temp dir are removed on exit,
also on Ctrl-C, SIGTERM or error.
EOF
}

NODES=4
SIZE_KIB=65536
UPLINK=100
TIMEOUT=""
KEEP=0
JSON=0

die() {
	echo "$PROG: $*" >&2
	exit 2
}
log() { echo "[$PROG $(date +%T)] $*" >&2; }

while (($#)); do
	case $1 in
	--nodes) NODES=${2:?}; shift ;;
	--size-kib) SIZE_KIB=${2:?}; shift ;;
	--uplink-mbit) UPLINK=${2:?}; shift ;;
	--timeout) TIMEOUT=${2:?}; shift ;;
	--keep) KEEP=1 ;;
	--json) JSON=1 ;;
	-h | --help) usage; exit 0 ;;
	*) die "unknown argument $1 (see --help)" ;;
	esac
	shift
done
[[ $NODES =~ ^[0-9]+$ ]] && ((NODES >= 1 && NODES <= 50)) || die "--nodes must be 1..50"
[[ $SIZE_KIB =~ ^[0-9]+$ ]] && ((SIZE_KIB >= 1)) || die "--size-kib must be a positive integer"
[[ $UPLINK =~ ^[0-9]+$ ]] && ((UPLINK >= 1)) || die "--uplink-mbit must be a positive integer"
[[ -z $TIMEOUT || $TIMEOUT =~ ^[0-9]+$ ]] || die "--timeout must be whole seconds"
((EUID == 0)) || die "must run as root (network namespaces, iptables, tc)"
for c in ip tc iptables jq awk; do
	command -v "$c" >/dev/null || die "$c not found (apt-get install -y iproute2 iptables jq)"
done

SIZE=$((SIZE_KIB * 1024))
TMIN=$(awk -v s="$SIZE" -v u="$UPLINK" 'BEGIN { printf "%.3f", 2 * s * 8 / (u * 1e6) }')
[[ -n $TIMEOUT ]] || TIMEOUT=$(awk -v t="$TMIN" 'BEGIN { printf "%d", 4 * t + 60 }')

if [[ -z ${ARCHY:-} ]]; then
	ARCHY=${CARGO_TARGET_DIR:-$REPO/target}/release/archy
	if [[ ! -x $ARCHY ]]; then
		log "building $ARCHY (cargo build --release -p archy-node --bin archy)"
		(cd "$REPO" && cargo build --release -p archy-node --bin archy) >&2
	fi
fi
[[ -x $ARCHY ]] || die "archy binary $ARCHY not found or not executable"

# ---------------------------------------------------------------------------------------
PIDS=()
T=""
netns_list() { ip netns list 2>/dev/null | awk '$1 ~ /^archyn-/ {print $1}'; }
cleanup() {
	local rc=$? p ns
	set +e
	trap - EXIT INT TERM
	for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
	sleep 0.5
	for ns in $(netns_list); do
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

for ns in $(netns_list); do
	log "removing stale namespace $ns"
	for p in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$p" 2>/dev/null || true; done
	ip netns del "$ns"
done

T=$(mktemp -d "${TMPDIR:-/tmp}/archy-nat-bench.XXXXXX")
chmod 755 "$T"
in_ns() { local ns=$1; shift; ip netns exec "$ns" "$@"; }

# ---------------------------------------------------------------------------------------
# The networks.
ip netns add archyn-pub
in_ns archyn-pub ip link add br0 type bridge
in_ns archyn-pub ip link set br0 up

# A veth from namespace $1 (named $2 there) into bridge $4 of namespace $3.
plug() { # ns ifname bridge_ns bridge
	local ns=$1 ifname=$2 bns=$3 br=$4 peer
	peer="v$RANDOM$RANDOM"
	ip link add "$ifname" netns "$ns" type veth peer name "$peer" netns "$bns"
	in_ns "$bns" ip link set "$peer" master "$br" up
	in_ns "$ns" ip link set "$ifname" up
}
cap() { # ns ifname: uplink cap
	in_ns "$1" tc qdisc add dev "$2" root tbf rate "${UPLINK}mbit" burst 256kb latency 400ms
}

ip netns add archyn-o
in_ns archyn-o ip link set lo up
plug archyn-o eth0 archyn-pub br0
in_ns archyn-o ip addr add 198.18.0.1/24 dev eth0
cap archyn-o eth0

for h in 1 2; do
	r=archyn-r$h
	ip netns add "$r"
	in_ns "$r" ip link set lo up
	plug "$r" wan archyn-pub br0
	in_ns "$r" ip addr add "198.18.0.1$h/24" dev wan
	in_ns "$r" ip link add lan type bridge
	in_ns "$r" ip link set lan up
	in_ns "$r" ip addr add "192.168.$h.1/24" dev lan
	in_ns "$r" sysctl -qw net.ipv4.ip_forward=1
	in_ns "$r" iptables -P FORWARD DROP
	in_ns "$r" iptables -A FORWARD -i lan -o lan -j ACCEPT
	in_ns "$r" iptables -A FORWARD -i lan -o wan -j ACCEPT
	in_ns "$r" iptables -A FORWARD -i wan -o lan -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT
	if ((h == 1)); then
		in_ns "$r" iptables -t nat -A POSTROUTING -o wan -j MASQUERADE
	else
		in_ns "$r" iptables -t nat -A POSTROUTING -o wan -j MASQUERADE --random-fully
	fi
	cap "$r" wan
	for ((i = 1; i <= NODES; i++)); do
		n="archyn-$h-$i"
		ip netns add "$n"
		in_ns "$n" ip link set lo up
		plug "$n" eth0 "$r" lan
		in_ns "$n" ip addr add "192.168.$h.$((10 + i))/24" dev eth0
		in_ns "$n" ip route add default via "192.168.$h.1"
	done
done

# ---------------------------------------------------------------------------------------
# The blob and the origin.
head -c "$SIZE" /dev/urandom >"$T/blob"
log "origin: archy seed with the blob, a DHT node and the relay"
in_ns archyn-o "$ARCHY" seed --data "$T/origin" --import "$T/blob" --listen 198.18.0.1:4433 \
	--dht --dht-listen 198.18.0.1:4500 --relay-listen 198.18.0.1:4434 --json \
	>"$T/origin.json" 2>"$T/origin.log" &
PIDS+=($!)
for ((i = 0; i < 300; i++)); do
	[[ -s $T/origin.json ]] && break
	kill -0 "${PIDS[0]}" 2>/dev/null || die "the origin did not start: $(tail -n 5 "$T/origin.log")"
	sleep 0.1
done
[[ -s $T/origin.json ]] || die "the origin did not start in 30 s"
ORIGIN=$(jq -r .addr "$T/origin.json")
DHT=$(jq -r '.dht[0]' "$T/origin.json")
HASH=$(jq -r '.blobs[0]' "$T/origin.json")
ORIGIN_ID=${ORIGIN%@*}

tx() { in_ns archyn-o cat /sys/class/net/eth0/statistics/tx_bytes; }
TX0=$(tx)
START=$EPOCHREALTIME
log "2 x $NODES nodes fetch $HASH ($SIZE bytes) at once"
NODE_PIDS=()
for h in 1 2; do
	for ((i = 1; i <= NODES; i++)); do
		ip="192.168.$h.$((10 + i))"
		in_ns "archyn-$h-$i" "$ARCHY" fetch "$HASH" --size "$SIZE" --data "$T/n$h-$i" \
			--listen "$ip:0" --dht-listen "$ip:0" --origin "$ORIGIN" --bootstrap "$DHT" \
			--iroh-relay "$T/origin/relay.json" --seed --json \
			>"$T/n$h-$i.json" 2>"$T/n$h-$i.log" &
		PIDS+=($!)
		NODE_PIDS+=("$h-$i:$!")
	done
done

# Wait for every summary line (or exit, or the deadline).
DEADLINE=$(awk -v s="$START" -v t="$TIMEOUT" 'BEGIN { printf "%.3f", s + t }')
while :; do
	pending=0
	for e in "${NODE_PIDS[@]}"; do
		f="$T/n${e%%:*}.json"
		pid=${e##*:}
		if [[ ! -s $f ]] && kill -0 "$pid" 2>/dev/null; then pending=1; fi
	done
	((pending)) || break
	(($(awk -v n="$EPOCHREALTIME" -v d="$DEADLINE" 'BEGIN { print (n > d) }'))) && { log "timeout after $TIMEOUT s"; break; }
	sleep 0.1
done
TX1=$(tx)
EGRESS=$((TX1 - TX0))

# ---------------------------------------------------------------------------------------
# Per node: bytes by kind of source.
all_ok=1
nodes_json="[]"
for h in 1 2; do
	for ((i = 1; i <= NODES; i++)); do
		f="$T/n$h-$i.json"
		line=$(head -n 1 "$f" 2>/dev/null || true)
		[[ $line == "{"*"}" ]] || line='{"verified": false, "error": "no summary (see the log)"}'
		row=$(jq -c --arg origin "$ORIGIN_ID" --arg lan "192.168.$h." --argjson home "$h" \
			--arg node "$h-$i" '
			def paths: (.paths // []) | map({key: .id, value: .kind}) | from_entries;
			. as $r | (paths) as $p
			| [(.bytes_by_provider // {}) | to_entries[]
				| {id: (.key | split("@")[0]), ip: (.key | split("@")[1] // ""), b: .value}] as $src
			| {node: $node, home: $home, verified: (.verified // false), seconds: (.seconds // null),
				from_origin: ([$src[] | select(.id == $origin) | .b] | add // 0),
				from_lan: ([$src[] | select(.id != $origin and (.ip | startswith($lan))) | .b] | add // 0),
				from_remote_direct: ([$src[] | select(.id != $origin and ((.ip | startswith($lan)) | not)
					and ($p[.id] // "direct") == "direct") | .b] | add // 0),
				from_remote_relayed: ([$src[] | select(.id != $origin and ((.ip | startswith($lan)) | not)
					and ($p[.id] // "") == "relayed") | .b] | add // 0),
				error: (.error // null)}' <<<"$line")
		[[ $(jq -r .verified <<<"$row") == true ]] || all_ok=0
		nodes_json=$(jq -c --argjson r "$row" '. + [$r]' <<<"$nodes_json")
	done
done
SECONDS_ALL=$(jq '[.[].seconds // 0] | max' <<<"$nodes_json")
summary=$(jq -n --argjson nodes "$nodes_json" --argjson size "$SIZE" --argjson uplink "$UPLINK" \
	--argjson egress "$EGRESS" --argjson tmin "$TMIN" --argjson seconds "$SECONDS_ALL" \
	--argjson per_home "$NODES" '{
		size: $size, uplink_mbit: $uplink, nodes_per_home: $per_home,
		all_verified: ([$nodes[].verified] | all),
		seconds: $seconds, t_min: $tmin, x_t_min: (if $tmin > 0 then $seconds / $tmin else null end),
		origin_egress_bytes: $egress, origin_egress_x_size: ($egress / $size),
		from_origin_by_home: [1, 2 | . as $h | [$nodes[] | select(.home == $h) | .from_origin] | add],
		from_lan: ([$nodes[].from_lan] | add), from_remote_direct: ([$nodes[].from_remote_direct] | add),
		from_remote_relayed: ([$nodes[].from_remote_relayed] | add),
		nodes: $nodes}')

if ((JSON)); then
	echo "$summary"
else
	jq -r '"node  verified  seconds  origin      lan         remote-direct  remote-relayed",
		(.nodes[] | "\(.node)   \(.verified)      \(.seconds // "-")   \(.from_origin)   \(.from_lan)   \(.from_remote_direct)   \(.from_remote_relayed)"),
		"",
		"all verified: \(.all_verified); slowest node \(.seconds) s (T_min \(.t_min) s, \(.x_t_min) x)",
		"origin egress \(.origin_egress_bytes) bytes = \(.origin_egress_x_size) x the blob (relay traffic included)",
		"bytes from the origin per home: \(.from_origin_by_home)"' <<<"$summary"
fi
if ((!all_ok)); then
	for e in "${NODE_PIDS[@]}"; do
		f="$T/n${e%%:*}.log"
		[[ -s $f ]] && { log "node ${e%%:*}:"; tail -n 3 "$f" >&2; }
	done
	exit 1
fi
