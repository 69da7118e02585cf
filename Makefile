# middlebox: `make demo` shows the product working, `make test` passes the tests.
# Both set up everything they need on a fresh Debian 12 machine (run as root).

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
APT_PACKAGES := tshark tcpdump iproute2 nftables iptables libnetfilter-queue-dev \
                iperf3 mptcpd ethtool socat conntrack gcc python3-dev systemd
# (systemd: `systemd-analyze verify` checks the shipped unit, contrib/middlebox.service)

.PHONY: all deps venv build test test-compiled test-pure fuzz soak-restart soak-guest soak-inbound demo bench bench-multipath bench-policy bench-inbound clean install

all: build

# System packages the tests, the demo and the NetfilterQueue build need.
deps: .deps.stamp
.deps.stamp:
	@missing=""; for p in $(APT_PACKAGES); do \
	    dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	    echo "installing:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi
	@touch $@

venv: $(VENV)/.stamp
$(VENV)/.stamp: pyproject.toml setup.py .deps.stamp
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel Cython
	$(PY) -m pip install -q -e '.[test]'
	@touch $@

# Compile the Cython twin in place (the editable install imports it from the tree).
build: venv
	$(PY) setup.py -q build_ext --inplace

test-compiled: build
	$(PY) -m pytest tests

test-pure: build
	MIDDLEBOX_PURE_PYTHON=1 $(PY) -m pytest tests

# The fuzz volume step first, so that the run closes on pytest's summary line.
test: build
	$(PY) tests/fuzz_volume.py
	$(PY) -m pytest tests
	MIDDLEBOX_PURE_PYTHON=1 $(PY) -m pytest tests

# 1,000,000 mutated packets through the compiled core and wire parser (~15 s; FUZZ_SEED=,
# FUZZ_PACKETS= or `$(PY) tests/fuzz_volume.py --help` for another run).
fuzz: build
	$(PY) tests/fuzz_volume.py

# Kill-and-restart scenarios against the kernel (tests/integration/soak_restart_adversary.py,
# ~8 min on the netlink backend; not part of `make test`: CI's time goes to the suite).
soak-restart: build
	MIDDLEBOX_TEST_BACKENDS=netlink $(PY) -m pytest tests/integration/soak_restart_adversary.py

# Repeated uploads of a guest without timestamps and SACK, two uplinks, DSS checksums, each
# checked (tests/integration/soak_guest_variant.py; SOAK_N=, SOAK_VARIANT=, SOAK_DIR=; ~12 s
# per upload; captures kept for the first that fails). Not part of `make test`.
soak-guest: build
	MIDDLEBOX_TEST_BACKENDS=netlink $(PY) -m pytest -s tests/integration/soak_guest_variant.py

# Repeated inbound 4 MB downloads by a Linux MPTCP client joining our announced uplink, 2 %
# loss each way on both paths, each checked (tests/integration/soak_inbound_loss.py; SOAK_N=,
# SOAK_SLOW=, SOAK_DIR=; under a second each; captures kept for the first that fails or is
# slow). Not part of `make test`.
soak-inbound: build
	MIDDLEBOX_TEST_BACKENDS=netlink $(PY) -m pytest -s tests/integration/soak_inbound_loss.py

demo: build
	$(VENV)/bin/middlebox demo

bench: build
	$(PY) bench/bench_wire.py
	$(PY) bench/bench_core.py

# Multipath goodput, the converter vs plain TCP, Linux MPTCP and an MPTCP proxy (namespaces,
# root; the full matrix takes hours: BENCH_ARGS='--scenario 2x100-* --runs 3' for a subset;
# bench/README.md). Writes bench/results/multipath.{md,json,png}.
BENCH_ARGS ?=
bench-multipath: build
	$(PY) -c 'import matplotlib' 2>/dev/null || $(PY) -m pip install -q -e '.[bench]'
	$(PY) bench/bench_multipath.py $(BENCH_ARGS)

bench-policy: build
	$(PY) -c 'import matplotlib' 2>/dev/null || $(PY) -m pip install -q -e '.[bench]'
	$(PY) bench/bench_policy.py $(BENCH_ARGS)

bench-inbound: build
	$(PY) bench/bench_inbound.py $(BENCH_ARGS)

# The service on this host (root): a venv of its own in $(PREFIX) (the unit's ProtectHome=
# hides /root and /home, so not this tree's .venv), `middlebox` in $(BINDIR), the unit, and the
# example config (kept: an existing middlebox.toml is never overwritten). README.md, "On a KVM host".
PREFIX     ?= /opt/middlebox
BINDIR     ?= /usr/local/bin
SYSCONFDIR ?= /etc
UNITDIR    ?= /etc/systemd/system
install: deps
	$(PYTHON) -m venv $(PREFIX)
	$(PREFIX)/bin/pip install -q --upgrade pip setuptools wheel Cython
	$(PREFIX)/bin/pip install -q .
	install -d $(PREFIX)/share/middlebox/rules $(BINDIR)
	install -m 0644 rules/middlebox.nft rules/middlebox.xtables $(PREFIX)/share/middlebox/rules/
	ln -sf $(PREFIX)/bin/middlebox $(BINDIR)/middlebox
	sed 's#/usr/local/bin/middlebox#$(BINDIR)/middlebox#g' contrib/middlebox.service > middlebox.service.tmp
	install -D -m 0644 middlebox.service.tmp $(UNITDIR)/middlebox.service && rm -f middlebox.service.tmp
	install -D -m 0644 contrib/middlebox.toml.example $(SYSCONFDIR)/middlebox/middlebox.toml.example
	test -e $(SYSCONFDIR)/middlebox/middlebox.toml || \
	    install -m 0644 contrib/middlebox.toml.example $(SYSCONFDIR)/middlebox/middlebox.toml
	systemctl daemon-reload 2>/dev/null || true  # no systemd running: nothing to reload
	@echo "next: edit $(SYSCONFDIR)/middlebox/middlebox.toml, 'middlebox config check', 'systemctl enable --now middlebox'"

clean:
	rm -rf build *.egg-info cext/*.c middlebox/*.so middlebox/_ccore/*.so .deps.stamp $(VENV)
