#!/usr/bin/env bash
# Lifecycle gate: every example app through install, reachable, stop, start, restart,
# daemon restart (adopted), uninstall (no ghost), reinstall (data found), purge.
#
#   tests/lifecycle/gate.sh --runtime podman|process [--iterations N]
#
# Runs real `archy` processes against the real runtime on 127.0.0.1 and ends with the
# plain line `N passed, M failed`. Needs root (podman here; the process runtime always),
# /bin/busybox and curl; the `process` runtime needs no podman at all. Builds into
# $CARGO_TARGET_DIR when set; ARCHY=/path/to/archy uses that binary instead.
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
check() { # name, command...
  local name=$1; shift
  if "$@" >/dev/null 2>&1; then passed=$((passed+1)); echo "ok    $name"; else failed=$((failed+1)); echo "FAIL  $name"; fi
}
case "$runtime" in
  podman|process) ;;
  *) echo "FAIL  runtime $runtime: podman or process"; echo "0 passed, 1 failed"; exit 1 ;;
esac
if [ -n "${ARCHY:-}" ]; then
  archy=$ARCHY   # a built binary (the cargo test that runs this gate passes its own)
else
  cargo build -q -p archy-node --bin archy --manifest-path "$root/Cargo.toml" || exit 1
  archy="${CARGO_TARGET_DIR:-$root/target}/debug/archy"
fi
work=$(mktemp -d)
node="gate$$"
daemon_pid=
cleanup() {
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
data="$work/node"
start_daemon() {
  rm -f "$data/api.addr"
  "$archy" node run --data "$data" --name "$node" --api 127.0.0.1:0 --origin-dir "$publish" --root "$publish/root.json" --runtime "$runtime" >/dev/null 2>&1 &
  daemon_pid=$!
  for _ in $(seq 1 50); do [ -s "$data/api.addr" ] && return 0; sleep 0.1; done
  return 1
}
port_of() { grep -o 'host: [0-9]*' "$root/examples/$1/app.yaml" | head -1 | cut -d' ' -f2; }
reachable() { curl -fsS -m 3 "http://127.0.0.1:$(port_of "$1")/" >/dev/null; }
unreachable() { ! reachable "$1"; }
phase_is() { "$archy" app status "org.example.$1" --data "$data" --json | grep -q "\"phase\":\"$2\""; }
in_runtime() { # app id: whether the runtime still has anything of it
  if [ "$runtime" = podman ]; then [ -n "$(podman ps -aq --filter "label=io.archy.node=$node" --filter "label=io.archy.app=$1")" ]
  else [ -e "$data/process/apps/$1" ]; fi
}
no_ghost() { ! "$archy" app status "org.example.$1" --data "$data" && ! in_runtime "org.example.$1"; }
a() { "$archy" app "$@" --data "$data"; }

for i in $(seq 1 "$iterations"); do
  check "[$i] daemon starts" start_daemon
  for app in hello notes status; do
    check "[$i] $app: install" a install "org.example.$app"
    check "[$i] $app: reachable" reachable "$app"
    check "[$i] $app: stop" a stop "org.example.$app"
    check "[$i] $app: unreachable when stopped" unreachable "$app"
    check "[$i] $app: start" a start "org.example.$app"
    check "[$i] $app: reachable after start" reachable "$app"
    check "[$i] $app: restart" a restart "org.example.$app"
    sleep 1
    check "[$i] $app: reachable after restart" reachable "$app"
  done
  secret_before=$(cat "$data/apps/org.example.notes/secrets/NOTES_ADMIN_TOKEN" 2>/dev/null)
  kill -9 "$daemon_pid"; wait "$daemon_pid" 2>/dev/null; daemon_pid=
  check "[$i] apps outlive a killed daemon" reachable hello
  check "[$i] daemon restarts" start_daemon
  sleep 2
  for app in hello notes status; do
    check "[$i] $app: running after daemon restart" phase_is "$app" running
  done
  for app in status notes hello; do
    check "[$i] $app: uninstall" a uninstall "org.example.$app"
    check "[$i] $app: no ghost" no_ghost "$app"
  done
  check "[$i] notes: data kept after uninstall" test -f "$data/apps/org.example.notes/volumes/data/index.html"
  check "[$i] notes: reinstall" a install org.example.notes
  check "[$i] notes: reinstall finds its secret" test "$(cat "$data/apps/org.example.notes/secrets/NOTES_ADMIN_TOKEN")" = "$secret_before"
  check "[$i] notes: purge" a uninstall org.example.notes --purge
  check "[$i] notes: data gone after purge" test ! -e "$data/apps/org.example.notes"
  kill "$daemon_pid"; wait "$daemon_pid" 2>/dev/null; daemon_pid=
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
