#!/usr/bin/env bash
# Packs examples/<app>/image.oci.tar for every example: /bin/busybox (static, from
# Debian's busybox-static) plus the app's www/ directory. Deterministic output.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
archy=${ARCHY:-archy}
command -v "$archy" >/dev/null || archy="cargo run -q -p archy-node --bin archy --"
[ -x /bin/busybox ] || { echo "needs /bin/busybox: apt-get install busybox-static" >&2; exit 1; }
for app in "$here"/*/; do
  [ -f "$app/app.yaml" ] || continue
  rootfs=$(mktemp -d)
  mkdir -p "$rootfs/bin" "$rootfs/www"
  cp /bin/busybox "$rootfs/bin/busybox"
  cp -r "$app/www/." "$rootfs/www/"
  $archy app pack "$rootfs" --out "$app/image.oci.tar"
  rm -rf "$rootfs"
done
