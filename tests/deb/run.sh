#!/bin/bash
# The desktop app's Debian package: built by the Tauri bundler (debug
# profile, so it reuses the end-to-end test's build), installed with dpkg on
# this machine, checked for the binary, desktop entry, icons and autostart
# entry, started under Xvfb in a fresh HOME, then removed again.
set -euo pipefail
cd "$(dirname "$0")/../.."
T=${CARGO_TARGET_DIR:-$HOME/.cache/tidemark/target}
[ "$(id -u)" = 0 ] || { echo "tests/deb: dpkg -i needs root; run make test as root (CI does)" >&2; exit 1; }
for tool in dpkg dpkg-deb xvfb-run; do
  command -v $tool >/dev/null || { echo "tests/deb: $tool is missing (make test-deps installs it)" >&2; exit 1; }
done
if dpkg -s tidemark >/dev/null 2>&1; then
  echo "tests/deb: a tidemark package is installed already; remove it first (dpkg -r tidemark)" >&2
  exit 1
fi
(cd src-tauri && ../ui/node_modules/.bin/tauri build --debug --bundles deb >/dev/null)
deb=$(ls -t "$T"/debug/bundle/deb/*.deb | head -1)
echo "deb: built $(basename "$deb") ($(du -h "$deb" | cut -f1))"

WORK=$(mktemp -d)
trap 'dpkg -r tidemark >/dev/null 2>&1 || true; rm -rf "$WORK"' EXIT
dpkg -i "$deb" >/dev/null
fail() { echo "deb: $*" >&2; exit 1; }
[ -x /usr/bin/tidemark-app ] || fail "/usr/bin/tidemark-app is not installed"
grep -q '^Exec=tidemark-app' /usr/share/applications/Tidemark.desktop || fail "no desktop entry"
[ -s /usr/share/icons/hicolor/128x128/apps/tidemark-app.png ] || fail "no 128x128 icon"
grep -q '^Exec=tidemark-app --background' /etc/xdg/autostart/tidemark.desktop || fail "no autostart entry"

# Starts and stays up (the tray agent) in a fresh account; killed by
# timeout after 12 s, so 124 is the one good exit code.
export HOME=$WORK/home XDG_CONFIG_HOME=$WORK/home/.config XDG_DATA_HOME=$WORK/home/.local/share \
  XDG_CACHE_HOME=$WORK/home/.cache XDG_RUNTIME_DIR=$WORK/run
mkdir -p "$HOME/Documents" "$XDG_RUNTIME_DIR" && chmod 700 "$XDG_RUNTIME_DIR"
rc=0
timeout 12 xvfb-run -a -s "-screen 0 1280x800x24" /usr/bin/tidemark-app --background >"$WORK/app.log" 2>&1 || rc=$?
[ $rc = 124 ] || { cat "$WORK/app.log" >&2; fail "the installed app exited with $rc instead of running"; }

dpkg -r tidemark >/dev/null
[ ! -e /usr/bin/tidemark-app ] && [ ! -e /etc/xdg/autostart/tidemark.desktop ] || fail "dpkg -r left files behind"
echo "deb: installs, starts under Xvfb, removes cleanly"
