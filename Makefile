# collapse-audit: install / test / demo / bench / lint
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
PIP_FLAGS ?= --disable-pip-version-check -q
export PIP_CONSTRAINT := $(CURDIR)/constraints.txt

.PHONY: install test test-slow demo bench bench-quick bench-million lint clean browser

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install $(PIP_FLAGS) --upgrade pip setuptools wheel
	$(PIP) install $(PIP_FLAGS) torch==2.14.1 torchvision==0.29.1
	$(PIP) install $(PIP_FLAGS) -e '.[dev,ray]'
	touch $@

# Headless Chromium for the report's browser tests (Debian package).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "chromium missing: install Debian's chromium package for the browser tests"; fi; }

test: install
	$(PY) -m pytest -q -m "not slow"

test-slow: install
	$(PY) -m pytest -q -m slow

demo: install
	$(PY) -m collapse_audit.demo

bench: install
	$(PY) benchmarks/bench_metrics.py
	$(PY) benchmarks/bench_scale.py
	$(PY) benchmarks/bench_ray.py

# The scaling table up to 1M per side, with the whole scan (metrics, clusters, duplicates, report) at every size:
# about 1.5 hours on 2 cores, 8 GB of feature files in $(TMPDIR).
bench-million: install
	$(PY) benchmarks/bench_scale.py --slow --scan

bench-quick: install
	$(PY) benchmarks/bench_metrics.py --quick
	$(PY) benchmarks/bench_scale.py --sizes 10000,50000
	$(PY) benchmarks/bench_ray.py --images 60

lint: install
	$(VENV)/bin/ruff check collapse_audit tests benchmarks scripts

clean:
	rm -rf $(VENV) collapse-audit-out demo build *.egg-info
