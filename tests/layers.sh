#!/bin/bash
# Enforces DESIGN.md §1: dependencies point downward only. Each line names a
# crate and the crates (workspace or external) it must never depend on.
set -euo pipefail
cd "$(dirname "$0")/.."
fail=0
check() {
    local crate=$1; shift
    local tree
    tree=$(cargo tree -p "$crate" -e normal --prefix none --format '{p}' 2>/dev/null | awk '{print $1}' | sort -u)
    for banned in "$@"; do
        if grep -qx "$banned" <<<"$tree"; then
            echo "layering violation: $crate depends on $banned"
            fail=1
        fi
    done
}
UI="tauri clap indicatif axum rusqlite keyring"
check crypto format storage repository snapshot tidemark-cli opendal $UI
check format storage repository snapshot tidemark-cli opendal $UI
check storage crypto format repository snapshot tidemark-cli $UI
check repository snapshot catalog server tidemark-cli $UI
check snapshot catalog server tidemark-cli $UI
check catalog snapshot server tidemark-cli tauri clap indicatif axum keyring
check server snapshot client tidemark-cli tauri clap indicatif keyring
check client snapshot server tidemark-cli tauri clap indicatif keyring axum rusqlite
# Throttling knows sockets and rules, nothing of backups, storage or servers.
check throttle crypto format storage repository snapshot catalog server client agent tidemark-cli reqwest opendal $UI
# The watcher knows folders and events, nothing of backups, storage, servers or front ends.
check watcher crypto format storage repository snapshot catalog throttle server client agent test-support tidemark-cli reqwest opendal $UI
# The agent is every front end's library: no UI toolkit, terminal or HTTP server in it.
check agent server tidemark-cli tauri tidemark-app clap indicatif axum
[ $fail -eq 0 ] && echo "layers: ok"
exit $fail
