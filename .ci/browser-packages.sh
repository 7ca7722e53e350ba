#!/usr/bin/env bash
# Debian packages the browser tests need: chromium (Playwright drives /usr/bin/chromium: no browser download)
# and CJK fonts, so Chinese file names and text render in the screenshots. Needs root, or sudo.
set -euo pipefail
need=()
[ -x /usr/bin/chromium ] || need+=(chromium)
fc-list :lang=zh 2>/dev/null | grep -q . || need+=(fonts-noto-cjk)
[ ${#need[@]} -eq 0 ] && exit 0
as_root=()
[ "$(id -u)" -eq 0 ] || as_root=(sudo)
"${as_root[@]}" apt-get update -q
DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -q "${need[@]}"
