#!/usr/bin/env bash
# Lifecycle gate: every example app through install, reachable, stop, start, restart,
# daemon restart (adopted), update, uninstall (no ghost), reinstall (data found), purge;
# and an update that never becomes healthy, which must roll back.
#
#   tests/lifecycle/gate.sh --runtime podman|process [--iterations N]
#
# Runs real `archy` processes against the real runtime on 127.0.0.1 and ends with the
# plain line `N passed, M failed`. Needs root (podman here; the process runtime always),
# /bin/busybox and curl; the `process` runtime needs no podman at all. Builds into
# $CARGO_TARGET_DIR when set; ARCHY=/path/to/archy and CATALOG_SIGNER=/path/to/catalog-signer
# use those binaries instead.
set -uo pipefail
runtime=podman
iterations=1
while [ $# -gt 0 ]; do
  case "$1" in
    --runtime) runtime=$2; shift 2 ;;
    --iterations) iterations=$2; shift 2 ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
root=$(cd "$(dirname "$0")/../.." && pwd)
passed=0; failed=0
# A failed check prints what its command said to stderr (the first 20 lines), so a red
# CI log shows why and not only what.
# The command runs in this shell (start_daemon sets daemon_pid), its output to a file.
check() { # name, command...
  local name=$1; shift
  if "$@" >"$work/check.out" 2>&1; then passed=$((passed+1)); echo "ok    $name"
  else
    failed=$((failed+1)); echo "FAIL  $name"
    { echo "--- FAIL $name: $*"; head -n 20 "$work/check.out"; } >&2
  fi
}
case "$runtime" in
  podman|process) ;;
  *) echo "FAIL  runtime $runtime: podman or process"; echo "0 passed, 1 failed"; exit 1 ;;
esac
# Built binaries (the cargo test that runs this gate passes its own), or build them.
archy=${ARCHY:-}
signer=${CATALOG_SIGNER:-}
if [ -z "$archy" ] || [ -z "$signer" ]; then
  { cargo build -q -p archy-node --bin archy --manifest-path "$root/Cargo.toml" &&
    cargo build -q -p catalog-signer --manifest-path "$root/Cargo.toml"; } || exit 1
  archy=${archy:-"${CARGO_TARGET_DIR:-$root/target}/debug/archy"}
  signer=${signer:-"${CARGO_TARGET_DIR:-$root/target}/debug/catalog-signer"}
fi
work=$(mktemp -d)
node="gate$$"
daemon_pid=
cleanup() {
  # After a failure, the daemon's last words go to stderr too.
  if [ "$failed" -gt 0 ] && [ -f "$work/daemon.log" ]; then
    { echo "--- last 60 lines of the daemon's log"; tail -n 60 "$work/daemon.log"; } >&2
  fi
  [ -n "$daemon_pid" ] && kill "$daemon_pid" 2>/dev/null && wait "$daemon_pid" 2>/dev/null
  if [ "$runtime" = podman ]; then
    for c in $(podman ps -aq --filter "label=io.archy.node=$node"); do podman rm -f -t 0 "$c" >/dev/null 2>&1; done
  else
    # Supervisors still running (only after a failure): killing one ends its app.
    for f in "$work"/node/process/apps/*/pid; do
      [ -f "$f" ] || continue
      pid=$(grep -o '"pid":[0-9]*' "$f" | cut -d: -f2)
      start=$(grep -o '"start_time":[0-9]*' "$f" | cut -d: -f2)
      [ -n "$pid" ] && [ "$(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null | cut -d' ' -f20)" = "$start" ] && kill -9 "$pid"
    done
  fi
  rm -rf "$work"
}
trap cleanup EXIT

# A signed catalog of the examples, as the demo's publisher makes it.
"$archy" demo --once --publish-only --dir "$work/demo" >/dev/null 2>&1 || { echo "FAIL  publish the examples (archy demo)"; echo "0 passed, 1 failed"; exit 1; }
publish="$work/demo/publish"
# The publisher's next catalog (v2, signed with the demo's keys by catalog-signer):
# release 1.0.1 of every example (same image, new manifest) and hello 1.0.2, whose health
# check never passes. Installs below pin their version.
# Each example gets a free host port instead of its fixed one (18080...), so a service
# that this machine already runs there cannot make the gate fail; release 1.0.0 is
# re-published with it.
declare -A ports
free_port() { # a port that nothing on 127.0.0.1 accepts on and nothing listens on
  local p
  for _ in $(seq 1 100); do
    p=$((20000 + RANDOM % 40000))
    ss -Htln "sport = :$p" 2>/dev/null | grep -q . && continue
    (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && continue
    [[ " ${ports[*]} " == *" $p "* ]] && continue
    echo "$p"; return 0
  done
  return 1
}
publish_updates() {
  local apps="$work/demo/apps" keys="$work/demo/keys" next="$work/next"
  mkdir -p "$next"
  for app in hello notes status; do
    ports[$app]=$(free_port) || return 1
    sed -i "s/^    ports: \[{ host: [0-9]*,/    ports: [{ host: ${ports[$app]},/" "$apps/$app/app.yaml" || return 1
    grep -q "host: ${ports[$app]}," "$apps/$app/app.yaml" || { echo "no port in $apps/$app/app.yaml"; return 1; }
  done
  for app in hello notes status; do
    sed 's/^  version: 1.0.0$/  version: 1.0.1/' "$apps/$app/app.yaml" > "$apps/$app/app-1.0.1.yaml" || return 1
  done
  sed -e 's/^  version: 1.0.0$/  version: 1.0.2/' \
      -e 's|^  health_check: .*|  health_check: { type: http, port: 8080, path: /never-there, interval: 1s, timeout: 1s, retries: 3 }|' \
      "$apps/hello/app.yaml" > "$apps/hello/app-1.0.2.yaml" || return 1
  "$signer" catalog build --apps "$apps" --version 2 --expires 30d --out "$next/catalog.json" &&
    "$signer" sign "$next/catalog.json" --key "$keys/catalog.key" &&
    "$signer" timestamp --catalog "$next/catalog.json" --version 2 --expires 1d --out "$next/timestamp.json" &&
    "$signer" sign "$next/timestamp.json" --key "$keys/timestamp.key" &&
    "$signer" verify --root "$publish/root.json" --catalog "$next/catalog.json" --timestamp "$next/timestamp.json" &&
    mv "$next/catalog.json" "$publish/catalog.json" && mv "$next/timestamp.json" "$publish/timestamp.json"
}
publish_updates >"$work/publish-updates.log" 2>&1 || { cat "$work/publish-updates.log"; echo "FAIL  publish the updates (catalog-signer)"; echo "0 passed, 1 failed"; exit 1; }
data="$work/node"
start_daemon() {
  rm -f "$data/api.addr"
  "$archy" node run --data "$data" --name "$node" --api 127.0.0.1:0 --origin-dir "$publish" --root "$publish/root.json" --runtime "$runtime" >>"$work/daemon.log" 2>&1 &
  daemon_pid=$!
  for _ in $(seq 1 50); do [ -s "$data/api.addr" ] && return 0; sleep 0.1; done
  return 1
}
reachable() { curl -fsS -m 3 "http://127.0.0.1:${ports[$1]}/" >/dev/null; }
unreachable() { ! reachable "$1"; }
status_json() { "$archy" app status "org.example.$1" --data "$data" --json; }
phase_is() { status_json "$1" | grep -q "\"phase\":\"$2\""; }
# The running version (the last key of the status object), not the desired one.
version_is() { status_json "$1" | grep -q "\"version\":\"$2\"}\$"; }
held_back() { status_json "$1" | grep -q "\"held_back\":{[^}]*\"version\":\"$2\""; }
# An install that must fail and say it rolled back to version $3.
rolls_back() { # app, bad version, good version
  local out
  out=$("$archy" app install "org.example.$1" --version "$2" --data "$data" 2>&1) && return 1
  grep -q "rolled back to $3" <<<"$out"
}
in_runtime() { # app id: whether the runtime still has anything of it
  if [ "$runtime" = podman ]; then [ -n "$(podman ps -aq --filter "label=io.archy.node=$node" --filter "label=io.archy.app=$1")" ]
  else [ -e "$data/process/apps/$1" ]; fi
}
no_ghost() { ! "$archy" app status "org.example.$1" --data "$data" && ! in_runtime "org.example.$1"; }
a() { "$archy" app "$@" --data "$data"; }

for i in $(seq 1 "$iterations"); do
  check "[$i] daemon starts" start_daemon
  for app in hello notes status; do
    check "[$i] $app: install 1.0.0" a install "org.example.$app" --version 1.0.0
    check "[$i] $app: reachable" reachable "$app"
    check "[$i] $app: stop" a stop "org.example.$app"
    check "[$i] $app: unreachable when stopped" unreachable "$app"
    check "[$i] $app: start" a start "org.example.$app"
    check "[$i] $app: reachable after start" reachable "$app"
    check "[$i] $app: restart" a restart "org.example.$app"
    sleep 1
    check "[$i] $app: reachable after restart" reachable "$app"
  done
  secret_before=$(cat "$data/apps/catalog/org.example.notes/secrets/NOTES_ADMIN_TOKEN" 2>/dev/null)
  check "[$i] notes: its secret is in the catalog's data dir" test -n "$secret_before"
  kill -9 "$daemon_pid"; wait "$daemon_pid" 2>/dev/null; daemon_pid=
  check "[$i] apps outlive a killed daemon" reachable hello
  check "[$i] daemon restarts" start_daemon
  sleep 2
  for app in hello notes status; do
    check "[$i] $app: running after daemon restart" phase_is "$app" running
  done
  for app in hello notes status; do
    check "[$i] $app: update to 1.0.1" a install "org.example.$app" --version 1.0.1
    check "[$i] $app: runs 1.0.1" version_is "$app" 1.0.1
    check "[$i] $app: reachable after update" reachable "$app"
  done
  check "[$i] notes: update keeps its secret" test "$(cat "$data/apps/catalog/org.example.notes/secrets/NOTES_ADMIN_TOKEN")" = "$secret_before"
  check "[$i] hello: unhealthy update 1.0.2 fails and rolls back" rolls_back hello 1.0.2 1.0.1
  check "[$i] hello: runs 1.0.1 again" version_is hello 1.0.1
  check "[$i] hello: reachable after rollback" reachable hello
  check "[$i] hello: 1.0.2 held back" held_back hello 1.0.2
  check "[$i] status: still running (its dependency came back)" phase_is status running
  for app in status notes hello; do
    check "[$i] $app: uninstall" a uninstall "org.example.$app"
    check "[$i] $app: no ghost" no_ghost "$app"
  done
  check "[$i] notes: data kept after uninstall" test -f "$data/apps/catalog/org.example.notes/volumes/data/index.html"
  check "[$i] notes: reinstall" a install org.example.notes
  check "[$i] notes: reinstall finds its secret" test "$(cat "$data/apps/catalog/org.example.notes/secrets/NOTES_ADMIN_TOKEN")" = "$secret_before"
  check "[$i] notes: purge" a uninstall org.example.notes --purge
  check "[$i] notes: data gone after purge" test ! -e "$data/apps/catalog/org.example.notes"
  kill "$daemon_pid"; wait "$daemon_pid" 2>/dev/null; daemon_pid=
  # A failed iteration says enough: the next ones would only repeat it, slowly.
  [ "$failed" -eq 0 ] || break
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
