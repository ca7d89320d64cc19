#!/bin/sh
# report_check.sh KILN OUTDIR — runs a tiny experiment grid (2 runs, 1 epoch, 32x32
# images) and opens its report.html in headless Chromium: the page must load without
# console messages, its DOM must hold the tables, the SVG charts and the inline PNG
# grids (data URIs only: nothing fetched), and its screenshot must not be blank.
# Exits 77 (skipped) when Chromium is not installed (Debian: apt-get install chromium;
# scripts/deps.sh --test installs it).
set -eu
kiln=$1
out=$2
browser=$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)
if [ -z "$browser" ]; then
  echo "report_check: chromium is not installed; skipped"
  exit 77
fi
fail() {
  echo "report_check: FAIL: $*" >&2
  exit 1
}
rm -rf "$out"
mkdir -p "$out"
out=$(cd "$out" && pwd)

"$kiln" experiment --out "$out/grid" --synth-classes 2 --count 10 --image-size 32 --width 4 --cnet-hidden 8 \
  --epochs 1 --batch 4 --ratios 0.5 --threads 2 --grid-rows 2 --title "report check" -q > "$out/experiment.log" 2>&1 ||
  { cat "$out/experiment.log" >&2; fail "kiln experiment failed"; }
report=$out/grid/report.html
[ -s "$report" ] || fail "no report.html"

prof=$(mktemp -d)
trap 'rm -rf "$prof"' EXIT
# a private HOME: Chromium writes its crash database and caches there
export HOME="$prof"
flags="--headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking
  --disable-component-update --disable-sync --user-data-dir=$prof/profile --window-size=1280,2000"
# shellcheck disable=SC2086
timeout 180 "$browser" $flags --enable-logging=stderr --v=0 --screenshot="$out/screenshot.png" "file://$report" \
  > "$out/chrome.log" 2>&1 || { tail -20 "$out/chrome.log" >&2; fail "chromium could not take the screenshot"; }
# shellcheck disable=SC2086
timeout 180 "$browser" $flags --dump-dom "file://$report" > "$out/dom.html" 2> "$out/chrome-dom.log" ||
  fail "chromium could not dump the DOM"

# the page has no scripts: any console message is a problem (a parse error, a blocked load)
if grep -q ':CONSOLE' "$out/chrome.log" "$out/chrome-dom.log"; then
  grep ':CONSOLE' "$out/chrome.log" "$out/chrome-dom.log" >&2
  fail "console messages while loading the report"
fi

count() { grep -o "$1" "$out/dom.html" | wc -l; }
tables=$(count '<table>')
imgs=$(count '<img ')
inline=$(count 'src="data:image/png;base64,iVBORw0KGgo')
svgs=$(count '<svg ')
[ "$tables" -ge 4 ] || fail "expected at least 4 tables in the DOM, found $tables"
[ "$imgs" -ge 3 ] || fail "expected at least 3 images (comparison grid and one per run), found $imgs"
[ "$inline" -eq "$imgs" ] || fail "$imgs images but only $inline are inline PNGs"
[ "$svgs" -ge 4 ] || fail "expected at least 4 SVG charts, found $svgs"
grep -q 'Table 1' "$out/dom.html" || fail "Table 1 missing"
grep -q 'Baseline' "$out/dom.html" || fail "no baseline row"
if grep -Eq '(src|href)="(https?:)?//' "$out/dom.html"; then fail "the report references the network"; fi

# a blank 1280x2000 page compresses to a few KB; the report's is far larger
[ -s "$out/screenshot.png" ] || fail "no screenshot"
size=$(wc -c < "$out/screenshot.png")
[ "$size" -gt 60000 ] || fail "the screenshot is nearly blank ($size bytes)"
echo "report_check: ok: $tables tables, $imgs inline images, $svgs charts, screenshot $size bytes ($out/screenshot.png)"
