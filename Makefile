# metaclip — developer tasks. `make help` lists them.
PY ?= python3
PIP ?= $(PY) -m pip
# Debian packages the tests use: data (WordNet; gettext catalogues for LID) and a headless
# browser that renders report.html.
APT_TEST_PACKAGES ?= wordnet-base iso-codes shared-mime-info libc-l10n chromium

.PHONY: help dev deps-test test test-rust test-py lint fmt bench demo clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 14

dev: ## editable install with every extra (Rust extension built in release mode)
	$(PIP) install -e ".[test,train,ray]"

deps-test: ## test data from Debian packages, when apt is available (tests skip without)
	@if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(APT_TEST_PACKAGES) >/dev/null) \
	  || echo "note: apt-get failed; tests that need Debian data will skip"; \
	fi

test: deps-test dev test-rust test-py lint ## install everything, run all tests and lints (what CI runs)

test-rust: ## Rust unit tests of the core crate
	cargo test -p metaclip-core

test-py: ## pytest (no install)
	$(PY) -m pytest -q

lint: ## clippy, rustfmt, ruff, mypy, stubtest (the _core stub against the built module)
	cargo clippy --workspace --all-targets -- -D warnings
	cargo fmt --all -- --check
	$(PY) -m ruff check python tests bench
	$(PY) -m ruff format --check python tests bench
	$(PY) -m mypy
	$(PY) -m mypy.stubtest metaclip._core

fmt: ## format Rust and Python
	cargo fmt --all
	$(PY) -m ruff format python tests bench

bench: ## matching and pipeline benchmarks (prints tables; takes minutes)
	$(PY) bench/match_bench.py
	$(PY) bench/pipeline_bench.py

demo: ## install and run the demo
	$(PIP) install .
	$(PY) -m metaclip.cli demo

clean:
	rm -rf target build dist metaclip-demo bench/out python/metaclip/_core*.so
