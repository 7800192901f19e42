# Quick start:  sudo make demo   |   sudo make test
# Every target does the whole setup first (apt packages, a virtual environment in .venv, the package
# in editable mode); the setup is idempotent and takes well under a second when nothing changed.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
APT_PACKAGES := libpcap0.8 nftables gcc libc6-dev iproute2 python3-venv tshark socat tcpdump \
  chromium chromium-driver qemu-system-x86 busybox-static kmod zstd
PYTEST_ARGS ?=
DEMO_DIR := captures/demo

# Refuse early, in one line, when a goal needs root and we are not root.
ROOT_GOALS := setup apt demo test bench clean-leftovers root kernels
ifneq ($(filter $(ROOT_GOALS),$(or $(MAKECMDGOALS),help)),)
ifneq ($(shell id -u),0)
$(error this needs root (apt packages, network namespaces): run 'sudo make $(MAKECMDGOALS)')
endif
endif

.PHONY: help setup apt demo test lint unit bench fuzz clean-leftovers root kernels

help:
	@echo "sudo make demo   - set up, run the conformance suite on this kernel, write the report and captures"
	@echo "sudo make test   - set up, check the layers (make lint), run every test"
	@echo "make lint        - check the import contracts of pyproject.toml (the layers) with lint-imports"
	@echo "sudo make bench  - set up, run the benchmarks and print the figures"
	@echo "sudo make kernels - the conformance suite on the host kernel, 6.1 and 6.12 (QEMU guests): captures/kernels/report.md"
	@echo "make fuzz        - fuzz the decoder and reader for FUZZ_SECONDS (default 60); crashers kept in tests/data/fuzz/crashers/"
	@echo "sudo make clean-leftovers - remove namespaces left by killed runs (only this project's names)"

root:
	@true

setup: root apt $(STAMP)

apt: root
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "setup: installing apt packages:$$missing"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing >/dev/null || \
	    { echo "setup: apt-get install$$missing failed"; exit 1; }; \
	fi

# The compiled engine (see setup.py) is rebuilt whenever one of its sources changes.
ENGINE_SOURCES := setup.py $(wildcard verifier/pcap/reader.p* verifier/wire/decoder.p* verifier/analysis/attempt.p* \
  verifier/analysis/zeek.p* verifier/analysis/grouper.p* verifier/capture/ring.p*)

$(STAMP): pyproject.toml $(ENGINE_SOURCES) | root apt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' || \
	  { echo "setup: Python >= 3.11 is needed ($(PYTHON) is $$($(PYTHON) -V 2>&1))"; exit 1; }
	@if ! $(PYTHON) -m venv --help >/dev/null 2>&1 || ! $(PYTHON) -c 'import ensurepip' 2>/dev/null; then \
	  echo "setup: installing python3-venv"; DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  apt-get install -y -qq python3-venv >/dev/null; fi
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "setup: installing the package and its pinned dependencies into $(VENV), compiling the engine"
	@# compat: the project folder on sys.path through a .pth line, not an import-hook finder (which
	@# costs every command 8 ms of imports at start-up)
	@$(PY) -m pip install -q --disable-pip-version-check -e '.[test,dask]' --config-settings editable_mode=compat
	@# byte-compiled now, as pip does for a regular install (an editable one compiles nothing; with
	@# PYTHONDONTWRITEBYTECODE set, every command would compile its modules again: about 40 ms)
	@$(PY) -m compileall -q verifier netns >/dev/null
	@touch $(STAMP)

demo: setup
	@rm -rf $(DEMO_DIR)
	@$(PY) -m pytest tests/conformance -p no:cacheprovider -q -n 4 --keep-captures \
	  --verifier-captures $(DEMO_DIR) --verifier-report $(DEMO_DIR)/report.md $(PYTEST_ARGS); \
	status=$$?; echo; sed "/^<a id=/,$$ d" $(DEMO_DIR)/report.md 2>/dev/null; \
	echo "the evidence for every check: $(DEMO_DIR)/report.md"; echo "with ladder diagrams, in a browser: $(DEMO_DIR)/report.html"; echo "captures: $(DEMO_DIR)/ (in Wireshark open NAME.client.pcapng, the client's side alone; NAME.pcapng has every interface)"; exit $$status

test: setup
	@$(MAKE) --no-print-directory lint
	@$(PY) -m tests.corpora
	@$(PY) -m pytest -p no:cacheprovider -n 4 $(PYTEST_ARGS)

# The layers of [tool.importlinter] in pyproject.toml. No root needed; the venv must exist.
lint:
	@test -x $(VENV)/bin/lint-imports || { echo "make lint: run 'sudo make test' once first to set up $(VENV)"; exit 1; }
	@$(VENV)/bin/lint-imports --no-cache

unit:
	@test -x $(PY) || { echo "make unit: run 'sudo make test' once first to set up $(VENV)"; exit 1; }
	@$(PY) -m pytest tests/unit -p no:cacheprovider -q $(PYTEST_ARGS)

bench: setup
	@$(PY) bench/testbed.py
	@$(PY) bench/replay.py
	@$(PY) bench/suite.py
	@$(PY) bench/capture.py
	@$(PY) bench/scapy.py
	@$(PY) bench/corpus.py

# The conformance suite on several kernels side by side (README, Kernels under test). KERNELS: host,
# 6.1, 6.12 (Debian's, fetched into .cache/kernels once) or vmlinuz/vmlinux paths.
KERNELS ?= host 6.1 6.12
kernels: setup
	@$(VENV)/bin/verifier kernels $(KERNELS)

clean-leftovers: root $(STAMP)
	@$(VENV)/bin/verifier clean

# Bounded fuzzing, for CI: each atheris harness of tests/fuzz/ (pure-Python engine) on a temporary
# corpus seeded from tests/data/fuzz/, FUZZ_SECONDS in all (two thirds whole capture files, one third
# single frames). An input that crashes a harness (an exception other than CaptureFormatError) or
# hangs it (-timeout) is kept in tests/data/fuzz/crashers/ (frames/ for the frame harness), and the
# target fails. No root needed; the venv must exist (atheris comes with the test extra).
FUZZ_SECONDS ?= 60
fuzz:
	@test -x $(PY) || { echo "make fuzz: run 'sudo make test' once first to set up $(VENV)"; exit 1; }
	@$(PY) -c 'import atheris' 2>/dev/null || { echo "make fuzz: atheris is not installed in $(VENV): run 'sudo make setup'"; exit 1; }
	@tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	total=$(FUZZ_SECONDS); cap=$$((total * 2 / 3)); [ $$cap -ge 1 ] || cap=1; frm=$$((total - cap)); [ $$frm -ge 1 ] || frm=1; \
	mkdir -p "$$tmp/capture" "$$tmp/frame" "$$tmp/artifacts"; \
	cp tests/data/fuzz/*.pcap* "$$tmp/capture/" && cp tests/data/fuzz/frames/*.bin "$$tmp/frame/" || \
	  { echo "make fuzz: no seeds in tests/data/fuzz: run $(PY) tests/fuzz/make_corpus.py"; exit 1; }; \
	status=0; \
	for job in capture:$$cap:tests/data/fuzz/crashers frame:$$frm:tests/data/fuzz/crashers/frames; do \
	  name=$${job%%:*}; rest=$${job#*:}; secs=$${rest%%:*}; keep=$${rest#*:}; \
	  seeds=$$(ls "$$tmp/$$name" | wc -l); echo "make fuzz: tests/fuzz/fuzz_$$name.py for $$secs s ($$seeds seeds)"; \
	  $(PY) tests/fuzz/fuzz_$$name.py "$$tmp/$$name" -max_len=65536 -timeout=10 -max_total_time=$$secs \
	    -artifact_prefix="$$tmp/artifacts/$$name-" -print_final_stats=1 >"$$tmp/$$name.log" 2>&1; rc=$$?; \
	  found=$$(cd "$$tmp/artifacts" && ls | grep "^$$name-" | grep -v "^$$name-slow-unit-"); \
	  if [ $$rc -eq 0 ] && [ -z "$$found" ]; then \
	    runs=$$(sed -n 's/^stat::number_of_executed_units: *//p' "$$tmp/$$name.log"); \
	    cov=$$(grep -E '^#[0-9]+' "$$tmp/$$name.log" | tail -1 | grep -oE 'cov: [0-9]+ ft: [0-9]+ corp: [0-9]+'); \
	    echo "make fuzz:   ok: $$runs inputs run, $$cov, $$(( $$(ls "$$tmp/$$name" | wc -l) - seeds )) new inputs recorded; no crash, no hang"; \
	  else \
	    status=1; mkdir -p "$$keep"; \
	    grep -A30 -E 'Uncaught Python exception|ERROR: libFuzzer' "$$tmp/$$name.log" | head -40 | sed 's/^/    /'; \
	    for a in $$found; do kept="$$keep/fuzz_$${a}"; cp "$$tmp/artifacts/$$a" "$$kept"; \
	      echo "make fuzz: FOUND $${a#$$name-} in tests/fuzz/fuzz_$$name.py: the input is kept as $$kept"; \
	      echo "make fuzz:   reproduce: $(PY) tests/fuzz/fuzz_$$name.py $$kept"; done; \
	    [ -n "$$found" ] || { echo "make fuzz: tests/fuzz/fuzz_$$name.py exited with status $$rc and wrote no input; its log:"; \
	      tail -20 "$$tmp/$$name.log" | sed 's/^/    /'; }; \
	  fi; \
	done; \
	exit $$status
