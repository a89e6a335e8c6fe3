# collapse-audit: install / test / demo / bench / lint
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
PIP_FLAGS ?= --disable-pip-version-check -q
# torch/torchvision are pinned everywhere (the machine's mirror holds these wheels;
# an unpinned torch would pull gigabytes). Everything else comes from the lock.
TORCH_PINS := torch==2.14.1 torchvision==0.29.1
LOCK := requirements.lock

.PHONY: install lock test test-slow demo bench bench-quick bench-million bench-embed lint clean browser

install: $(VENV)/.installed

# Exact versions from $(LOCK) (the ones the tests passed with), then the package
# itself without resolving anything: a fresh install today and in a month is the same.
$(VENV)/.installed: pyproject.toml $(LOCK) constraints.txt Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install $(PIP_FLAGS) --upgrade 'pip>=24' setuptools wheel
	PIP_CONSTRAINT=$(CURDIR)/constraints.txt $(PIP) install $(PIP_FLAGS) $(TORCH_PINS)
	PIP_CONSTRAINT=$(CURDIR)/constraints.txt $(PIP) install $(PIP_FLAGS) -r $(LOCK)
	$(PIP) install $(PIP_FLAGS) --no-deps --no-build-isolation -e .
	$(PIP) check
	touch $@

# Re-resolve the version ranges of pyproject.toml on purpose (newest releases, torch
# pinned), in a scratch venv, and rewrite $(LOCK); then run 'make test' and commit both.
lock:
	rm -rf .lock-venv
	$(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install $(PIP_FLAGS) --upgrade 'pip>=24' setuptools wheel
	PIP_CONSTRAINT=$(CURDIR)/constraints.txt .lock-venv/bin/python -m pip install $(PIP_FLAGS) $(TORCH_PINS)
	PIP_CONSTRAINT=$(CURDIR)/constraints.txt .lock-venv/bin/python -m pip install $(PIP_FLAGS) '.[dev,ray]'
	{ echo "# Exact versions the test suite passed with (Python 3.11, Linux x86-64). 'make install' installs these;"; \
	  echo "# 'make lock' re-resolves the ranges in pyproject.toml on purpose and rewrites this file (then run 'make test')."; \
	  .lock-venv/bin/python -m pip freeze --exclude-editable --disable-pip-version-check | grep -v '^collapse-audit'; } > $(LOCK)
	rm -rf .lock-venv
	rm -f $(VENV)/.installed

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
	$(PY) examples/digits_demo.py

bench: install
	$(PY) benchmarks/bench_metrics.py
	$(PY) benchmarks/bench_new_metrics.py
	$(PY) benchmarks/bench_scale.py
	$(PY) benchmarks/bench_ray.py

# The scaling table up to 1M per side, with the whole scan (metrics, clusters, duplicates, report) at every size:
# about 1.5 hours on 2 cores, 8 GB of feature files in $(TMPDIR).
bench-million: install
	$(PY) benchmarks/bench_scale.py --slow --scan

# Embedding throughput: collapse-audit (float32, --amp, cached, PNG) against pytorch-fid and torch-fidelity on the
# same JPEGs and the same random Inception weights, alternated, with the model-only ceiling. About 7 minutes on
# 2 CPU cores; BENCH_EMBED_ARGS="--device cuda" for a GPU.
bench-embed: install
	$(PY) benchmarks/bench_embed.py $(BENCH_EMBED_ARGS)

bench-quick: install
	$(PY) benchmarks/bench_metrics.py --quick
	$(PY) benchmarks/bench_new_metrics.py --quick
	$(PY) benchmarks/bench_scale.py --sizes 10000,50000
	$(PY) benchmarks/bench_ray.py --images 60

lint: install
	$(VENV)/bin/ruff check collapse_audit tests benchmarks scripts

clean:
	rm -rf $(VENV) .lock-venv collapse-audit-out demo build *.egg-info
