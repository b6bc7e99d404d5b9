# Tidemark: `make run` and `make test` work on a fresh Debian machine as root.
# Every tool the build and the tests need is installed here, idempotently.

SHELL := /bin/bash
export CARGO_TARGET_DIR ?= $(HOME)/.cache/tidemark/target
export PATH := $(HOME)/.cargo/bin:$(PATH)
CARGO ?= cargo
TIDEMARK := $(CARGO_TARGET_DIR)/release/tidemark
DIR ?= $(shell xdg-user-dir DOCUMENTS 2>/dev/null || echo $(HOME)/Documents)

# Build: a C compiler for zstd/blake3, pkg-config for -sys crates, curl for rustup.
BUILD_PACKAGES := build-essential pkg-config curl ca-certificates
# Tests: a real sshd for SFTP, Apache's mod_dav for WebDAV, setpriv (util-linux)
# to drop root's read-anything capability in the unreadable-file test.
TEST_PACKAGES := openssh-server openssh-client apache2-bin apache2-utils util-linux

.PHONY: all deps test-deps rust build run test check fmt lint layers bench clean

all: build

deps:
	@missing=""; for p in $(BUILD_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then echo "installing:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; fi
	@$(MAKE) --no-print-directory rust

test-deps: deps
	@missing=""; for p in $(TEST_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then echo "installing:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; fi

rust:
	@command -v cargo >/dev/null 2>&1 || { echo "installing the Rust toolchain (rustup)"; \
	  curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal -c rustfmt,clippy; }
	@cargo fmt --version >/dev/null 2>&1 || rustup component add rustfmt
	@cargo clippy --version >/dev/null 2>&1 || rustup component add clippy

build: deps
	$(CARGO) build --release -p tidemark-cli

# Backs up $(DIR) (default: your documents) into the default repository in your
# data folder, creating it on first run, then lists the snapshots.
run: build
	@mkdir -p "$(DIR)"
	$(TIDEMARK) init --if-missing
	$(TIDEMARK) backup "$(DIR)" --exclude-caches
	$(TIDEMARK) snapshots

test: test-deps fmt lint layers
	$(CARGO) test --workspace --no-fail-fast

# Static checks: formatting, lints, and the layering rule of DESIGN.md §1.
check: fmt lint layers

fmt:
	$(CARGO) fmt --all -- --check

lint:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

layers:
	@bash tests/layers.sh

bench: build
	TIDEMARK_BIN=$(TIDEMARK) bench/run.sh --scale $${SCALE:-1.0} --rounds $${ROUNDS:-3}

clean:
	$(CARGO) clean
