#!/bin/sh
# Tidemark's per-user installer for Linux: no root, no administrator.
#
#   sh install.sh                       install for this user and enrol with the company server
#   sh install.sh --uninstall           remove the app; keep its settings (and the backups)
#   sh install.sh --uninstall --purge   also remove settings, enrolment and caches
#
# Fetched from the company server's download page (/download/CODE/install.sh),
# the script starts with the server's settings: where the files are and their
# SHA-256 (TIDEMARK_DOWNLOAD, TIDEMARK_FILES), the organisation's public
# signing key (TIDEMARK_ORG_KEY), the pin of the server's TLS public key
# (TIDEMARK_PIN: every download is refused from any other key) and the
# signed enrolment file (TIDEMARK_ENROLMENT, base64). Every file is checked
# against its SHA-256 before anything is installed. Backups are never touched: they live on the
# server (or the storage the user chose), not in this account.
set -eu

BIN="$HOME/.local/bin"
SHARE="${XDG_DATA_HOME:-$HOME/.local/share}"
CONFIG="${XDG_CONFIG_HOME:-$HOME/.config}"
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}"
APPS="$SHARE/applications"
ICONS="$SHARE/icons/hicolor/128x128/apps"
AUTOSTART="$CONFIG/autostart"
# The app's own folders (directories' ProjectDirs for org.Tidemark.tidemark).
TM_CONFIG="$CONFIG/tidemark"
TM_DATA="$SHARE/tidemark"
TM_CACHE="$CACHE/tidemark"

say() { printf '%s\n' "$*"; }
fail() { printf 'tidemark installer: %s\n' "$*" >&2; exit 1; }

uninstall() {
    rm -f "$BIN/tidemark" "$BIN/tidemark-app" "$APPS/tidemark.desktop" \
        "$ICONS/tidemark.png" "$AUTOSTART/tidemark.desktop"
    if [ "${1:-}" = purge ]; then
        rm -rf "$TM_CONFIG" "$TM_DATA" "$TM_CACHE"
        say "Tidemark is removed, with its settings. Your backups are kept where they are stored."
    else
        say "Tidemark is removed. Its settings stay in $TM_CONFIG (remove them with --uninstall --purge); your backups are kept where they are stored."
    fi
}

case "${1:-}" in
    --uninstall)
        case "${2:-}" in
            --purge) uninstall purge ;;
            "") uninstall ;;
            *) fail "unknown option ${2}; use --uninstall [--purge]" ;;
        esac
        exit 0
        ;;
    "") ;;
    *) fail "unknown option $1; run without options to install, or --uninstall [--purge]" ;;
esac

[ -n "${TIDEMARK_DOWNLOAD:-}" ] && [ -n "${TIDEMARK_FILES:-}" ] ||
    fail "this copy of the installer has no download settings: get it from your company's Tidemark download page"
command -v curl >/dev/null || fail "curl is needed to download Tidemark"
command -v sha256sum >/dev/null || fail "sha256sum (coreutils) is needed to check the download"

PINNED=""
[ -n "${TIDEMARK_PIN:-}" ] && PINNED="-k --pinnedpubkey sha256//$TIDEMARK_PIN"

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

# Download and check everything first, so a failure installs nothing.
printf '%s\n' "$TIDEMARK_FILES" | while read -r sum name; do
    [ -n "$name" ] || continue
    # The company server's certificate may be self-signed: curl then skips
    # the certificate authorities (-k) but accepts only the server's own
    # public key (the pin this script came with). The SHA-256 sums, checked
    # below, then catch a damaged file.
    # shellcheck disable=SC2086
    curl -fsS $PINNED -o "$TMP/$name" "$TIDEMARK_DOWNLOAD/$name" || fail "cannot download $name from $TIDEMARK_DOWNLOAD (if the server's key changed, get a new link)"
    printf '%s  %s\n' "$sum" "$TMP/$name" | sha256sum -c --status ||
        fail "$name does not match its checksum (damaged or altered in transit); nothing was installed"
done
[ -f "$TMP/tidemark" ] || [ -f "$TMP/tidemark-app" ] ||
    fail "the download page offers no Tidemark program for Linux; tell your administrator"

mkdir -p "$BIN" "$APPS" "$ICONS" "$AUTOSTART" "$TM_CONFIG"
for prog in tidemark tidemark-app; do
    if [ -f "$TMP/$prog" ]; then
        install -m 0755 "$TMP/$prog" "$BIN/$prog.new"
        mv -f "$BIN/$prog.new" "$BIN/$prog"
    fi
done
[ -f "$TMP/tidemark.png" ] && install -m 0644 "$TMP/tidemark.png" "$ICONS/tidemark.png"

# The desktop app when there is one, else the agent without a window.
if [ -f "$BIN/tidemark-app" ]; then
    EXEC="$BIN/tidemark-app"
else
    EXEC="$BIN/tidemark agent"
fi
cat >"$APPS/tidemark.desktop" <<EOF
[Desktop Entry]
Type=Application
Name=Tidemark
Comment=Backups that stay out of your way
Exec=$EXEC
Icon=tidemark
Categories=Utility;
Terminal=false
EOF
cat >"$AUTOSTART/tidemark.desktop" <<EOF
[Desktop Entry]
Type=Application
Name=Tidemark
Comment=Backups that stay out of your way
Exec=$EXEC --background
Icon=tidemark
Terminal=false
X-GNOME-Autostart-enabled=true
EOF

# The organisation's key first: the app trusts enrolment files signed with
# it, and only those.
if [ -n "${TIDEMARK_ORG_KEY:-}" ]; then
    printf '%s\n' "$TIDEMARK_ORG_KEY" >"$TM_CONFIG/org-signing.pub"
fi
if [ -n "${TIDEMARK_ENROLMENT:-}" ]; then
    printf '%s' "$TIDEMARK_ENROLMENT" | base64 -d >"$TM_CONFIG/enrolment.tidemark.tmp"
    mv -f "$TM_CONFIG/enrolment.tidemark.tmp" "$TM_CONFIG/enrolment.tidemark"
fi

say "Tidemark is installed in $BIN and starts when you log in."
say "It enrols this computer with your company's server on its first start."
