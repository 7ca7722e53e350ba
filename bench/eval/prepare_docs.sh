#!/usr/bin/env bash
# Fetch and prepare the eval documents: real public manuals from Debian's documentation packages.
#
#   bash bench/eval/prepare_docs.sh [OUT_DIR]        (default /tmp/zhiku-eval-docs)
#
# English: gnuplot.pdf (gnuplot-doc), octave.pdf (octave-doc). Chinese: debian-reference.zh-cn.pdf,
# maint-guide.zh-cn.pdf, debian-edu-bookworm-manual.pdf (zh-cn), and the Debian FAQ in Chinese, which its
# package ships only as HTML: every chapter is printed to PDF with headless chromium and the chapters are
# joined into debian-faq.zh-cn.pdf. Needs apt-get (no root: `apt-get download` writes to the current folder),
# chromium (bash .ci/browser-packages.sh installs it) and the project's .venv (pypdf, to join the chapters).
# The package versions below are the ones questions.jsonl was written against; another version may move pages.
set -euo pipefail
cd "$(dirname "$0")/../.."
out="$(realpath -m "${1:-/tmp/zhiku-eval-docs}")"
python="${PYTHON:-.venv/bin/python}"
packages=(
  "gnuplot-doc=5.4.4+dfsg1-2"
  "octave-doc=7.3.0-2"
  "debian-reference-zh-cn=2.100"
  "maint-guide-zh-cn=1.2.53"
  "debian-edu-doc-zh-cn=2.12.23~deb12u1"
  "debian-faq-zh-cn=11.1"
)
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$out" "$work/debs" "$work/root"
(
  cd "$work/debs"
  for spec in "${packages[@]}"; do
    if ! apt-get download -q "$spec" 2>/dev/null; then
      echo "warning: $spec is not available; taking the current ${spec%%=*} (gold pages may be off)" >&2
      apt-get download -q "${spec%%=*}"
    fi
  done
)
for deb in "$work"/debs/*.deb; do dpkg-deb -x "$deb" "$work/root"; done
share="$work/root/usr/share"
cp "$share/doc/gnuplot/gnuplot.pdf" "$share/doc/octave/octave.pdf" "$out/"
cp "$share/debian-reference/debian-reference.zh-cn.pdf" "$out/"
cp "$share/doc/maint-guide-zh-cn/maint-guide.zh-cn.pdf" "$out/"
cp "$share/doc/debian-edu-doc-zh-cn/debian-edu-bookworm-manual.pdf" "$out/"

faq="$share/doc/debian/FAQ/zh-cn"
chapters=()
for page in $(grep -o 'href="[a-z-]*\.zh-cn\.html"' "$faq/index.zh-cn.html" | cut -d'"' -f2 | awk '!seen[$0]++'); do
  [ "$page" = "index.zh-cn.html" ] && continue
  pdf="$work/faq-$(printf '%02d' ${#chapters[@]}).pdf"
  chromium --headless --no-sandbox --disable-gpu --no-pdf-header-footer --print-to-pdf="$pdf" \
    "file://$faq/$page" >/dev/null 2>&1
  chapters+=("$pdf")
done
"$python" - "$out/debian-faq.zh-cn.pdf" "${chapters[@]}" <<'PY'
import sys
from pypdf import PdfWriter

writer = PdfWriter()
for chapter in sys.argv[2:]:
    writer.append(chapter)
writer.add_metadata({"/Title": "Debian 常见问题 (Debian FAQ, zh-cn)"})
with open(sys.argv[1], "wb") as handle:
    writer.write(handle)
PY
echo "eval documents in $out:"
ls -l "$out"
