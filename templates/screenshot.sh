#!/bin/sh
# screenshot.sh: look at the emails the way a mail client would draw them.
#
# Renders each golden HTML email (templates/testdata/golden/*.html, the exact
# output of Renderer.Preview with fixed sample data) in headless Chromium,
# full page at 720px wide, and writes templates email-<name>.png files.
# Run it after changing a template and regenerating the golden files
# (go test ./templates -update), then look at every image before committing.
#
#   templates/screenshot.sh           # PNGs in $OUT (default /tmp/llmspend-email-shots)
#   templates/screenshot.sh --docs    # also refresh docs/img/email-<name>.png
#
# Needs chromium (apt-get install -y chromium); the work is done by
# TestScreenshots (screenshot_test.go) through chromedp.
#
# The default logo is an https URL: offline it does not load, and the
# screenshots show the fallback a recipient with images blocked sees: the
# alt text (the company name) in the logo's fixed 150px slot.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
out=${OUT:-/tmp/llmspend-email-shots}

cd "$root"
# Refuse to photograph stale golden files.
go test ./templates -run '^TestGolden$' -count=1 >/dev/null ||
	{ echo "screenshot.sh: golden files are stale: run go test ./templates -update" >&2; exit 1; }
LLMSPEND_SCREENSHOTS=$out go test ./templates -run '^TestScreenshots$' -count=1 -v | grep 'email-' || true
if [ "${1:-}" = "--docs" ]; then
	mkdir -p docs/img
	cp "$out"/email-*.png docs/img/
	ls -l docs/img/email-*.png
fi
