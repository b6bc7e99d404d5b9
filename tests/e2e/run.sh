#!/bin/bash
# End-to-end test of the built desktop app, headless: a virtual X display
# (Xvfb) with a tray host (trayer), a D-Bus session with GNOME Keyring's
# Secret Service (where the app keeps its secrets; its collection is a file
# under the throwaway HOME, so the test can "reboot" it) and a notification
# daemon (dunst) whose calls are logged, a fresh kernel session keyring
# (keyutils), tauri-driver + WebKitWebDriver driving the app's own webview. It sets all of this up itself and fails, never skips, when a
# piece is missing. Usage: tests/e2e/run.sh [APP_BINARY]
set -euo pipefail
cd "$(dirname "$0")/../.."

if [ "${1:-}" = "--inside" ]; then
  # On the virtual display, in the session keyring. Children are killed and
  # waited for here: orphans are not reaped on these machines.
  trap 'for p in ${PIDS:-}; do kill "$p" 2>/dev/null || true; done; for p in ${PIDS:-}; do wait "$p" 2>/dev/null || true; done' EXIT
  trayer --edge bottom --align right --widthtype pixel --width 200 --heighttype pixel --height 40 \
    >"$E2E_WORK/trayer.log" 2>&1 &
  PIDS="$!"
  # What the app asks the desktop to show, as the session bus carries it.
  dbus-monitor --session "interface='org.freedesktop.Notifications',member='Notify'" \
    >"$E2E_WORK/notifications.log" 2>&1 &
  PIDS="$PIDS $!"
  dunst >"$E2E_WORK/dunst.log" 2>&1 &
  PIDS="$PIDS $!"
  # The Secret Service, its login collection unlocked with a known password
  # as a login would. The test restarts it (by this pid) to simulate a reboot.
  echo -n "$E2E_KEYRING_PASSWORD" | gnome-keyring-daemon --foreground --unlock --components=secrets \
    >"$E2E_WORK/keyring.log" 2>&1 &
  echo $! >"$E2E_WORK/keyring.pid"
  PIDS="$PIDS $!"
  for _ in $(seq 100); do
    dbus-send --session --print-reply --dest=org.freedesktop.DBus /org/freedesktop/DBus \
      org.freedesktop.DBus.NameHasOwner string:org.freedesktop.secrets 2>/dev/null | grep -q "boolean true" && break
    sleep 0.1
  done
  dbus-send --session --print-reply --dest=org.freedesktop.DBus /org/freedesktop/DBus \
    org.freedesktop.DBus.NameHasOwner string:org.freedesktop.secrets | grep -q "boolean true" || {
    echo "e2e: gnome-keyring-daemon did not start its Secret Service:" >&2; cat "$E2E_WORK/keyring.log" >&2; exit 1; }
  tauri-driver --port 4444 --native-port 4445 >"$E2E_WORK/driver.log" 2>&1 &
  PIDS="$PIDS $!"
  # The apps WebDriver starts are this driver's descendants: the test ends
  # them by pid, never by name.
  export E2E_DRIVER_PID=$!
  node --test --test-timeout=600000 tests/e2e/desktop.test.mjs || {
    echo "--- tauri-driver log"; tail -50 "$E2E_WORK/driver.log"; exit 1; }
  exit 0
fi

APP=${1:-${CARGO_TARGET_DIR:-$HOME/.cache/tidemark/target}/debug/tidemark-app}
for tool in xvfb-run Xvfb keyctl dbus-run-session dbus-monitor dbus-send dunst tauri-driver WebKitWebDriver trayer xdotool import compare node; do
  command -v "$tool" >/dev/null || { echo "e2e: $tool is missing; run make test-deps" >&2; exit 1; }
done
command -v gnome-keyring-daemon >/dev/null || {
  echo "e2e: gnome-keyring-daemon is missing: the app keeps its secrets in the Secret Service, which the test runs from the gnome-keyring package (make test-deps installs it)" >&2; exit 1; }
[ -x "$APP" ] || { echo "e2e: no app binary at $APP; build it with cargo build -p tidemark-app" >&2; exit 1; }
# The company server the enrolment test runs: the CLI built beside the app.
TIDEMARK_BIN=$(dirname "$APP")/tidemark
if [ ! -x "$TIDEMARK_BIN" ]; then
  echo "e2e: building the tidemark CLI (its server) beside the app"
  CARGO_TARGET_DIR=$(realpath "$(dirname "$APP")/..") cargo build -q -p tidemark-cli
fi
[ -x "$TIDEMARK_BIN" ] || { echo "e2e: no tidemark binary at $TIDEMARK_BIN; build it with cargo build -p tidemark-cli" >&2; exit 1; }

WORK=$(mktemp -d /tmp/tidemark-e2e.XXXXXX)
export E2E_WORK=$WORK E2E_APP=$(realpath "$APP") E2E_SHOTS=${E2E_SHOTS:-/tmp/tidemark-e2e-shots} \
  E2E_KEYRING_PASSWORD=e2e-login-password E2E_TIDEMARK=$(realpath "$TIDEMARK_BIN")
export HOME=$WORK/home XDG_CONFIG_HOME=$WORK/home/.config XDG_DATA_HOME=$WORK/home/.local/share \
  XDG_CACHE_HOME=$WORK/home/.cache XDG_RUNTIME_DIR=$WORK/run
mkdir -p "$HOME/Documents" "$XDG_RUNTIME_DIR" && chmod 700 "$XDG_RUNTIME_DIR"
# A D-Bus session of its own (single instance and notifications go over
# it), never the caller's. No StatusNotifier host runs on it, so the tray
# draws into trayer (XEmbed), as on a desktop without one.
unset DBUS_SESSION_BUS_ADDRESS

# keyctl session: a fresh session keyring, so the kernel store the test
# clears at its "reboot" is this run's alone, never the caller's.
rc=0
keyctl session - xvfb-run -a -s "-screen 0 1280x800x24" dbus-run-session -- "$0" --inside || rc=$?
rm -rf "$WORK"
exit $rc
