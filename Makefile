# One command runner; the README shows the same commands.
PY ?= python3
HOST ?= 127.0.0.1
PORT ?= 8000
VENV := .venv
BIN := $(VENV)/bin
# PyPI's Linux torch wheel pulls several GB of CUDA libraries: TORCH_INDEX=https://download.pytorch.org/whl/cpu
# adds PyTorch's CPU-only wheel index, whose build pip then prefers (empty: pip's configured indexes alone)
TORCH_INDEX ?=
PIP_INSTALL := $(BIN)/pip install --quiet $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX))

# Python's bytecode cache on, where the environment turns it off (PYTHONDONTWRITEBYTECODE): without it each test
# process rewrites the asserts of ~420 modules again (6 s of CPU each), and every server, sandbox and training
# process compiles the package's modules again
unexport PYTHONDONTWRITEBYTECODE

.PHONY: setup run test test-fast test-long lint format bench bench-attacks browser-deps postgres-deps bench-deps clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# installed again only when pyproject.toml changed (the package itself is installed editable): make test-fast
# from an existing venv starts at once
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(PIP_INSTALL) -e '.[test,data,docs]'
	touch $@

setup: $(VENV)/.installed

run: $(BIN)/python
	$(PIP_INSTALL) -e .
	$(BIN)/python -m server --host $(HOST) --port $(PORT) $(ARGS)

# the browser tests need Debian's chromium, the frontend's unit tests its nodejs, deploy/'s test and bench its
# nginx: installed here when missing
browser-deps:
	@command -v chromium >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null)
	@command -v node >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq nodejs >/dev/null)
	@test -x /usr/sbin/nginx || (apt-get update -qq && apt-get install -y -qq nginx >/dev/null)

# the runs tests start a PostgreSQL server of their own from Debian's binaries: installed here when missing
postgres-deps:
	@ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq postgresql >/dev/null)

# proxy_bench.py's lighter load generator (--client h2load): nghttp2's h2load
bench-deps:
	@command -v h2load >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq nghttp2-client >/dev/null)

# the suite in JOBS processes (pytest-xdist), one per core of a 2-core machine (raise it on a bigger one):
# tests/conftest.py starts the longest first and the short last, and keeps two tests queued at each process, so two
# keep both cores busy to the end; three took 6-11 % more CPU and longer, as the servers, browsers and training
# processes each test process starts competed for the same cores. JOBS=0: one process, in order
JOBS ?= 2
PYTEST := $(BIN)/python -m pytest -q $(if $(filter-out 0,$(JOBS)),-n $(JOBS))

# everything CI runs: the browser, PostgreSQL, nginx and the lecture's full training run included
test: setup browser-deps postgres-deps
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(PYTEST) -m "not long"

# unit, API and golden tests: no browser, PostgreSQL, nginx or long training
test-fast: setup
	$(PYTEST) -m "not browser and not slow and not postgres and not long"

# the trainings to a lecture's numbers that take hours (makemore part 5's 200,000 WaveNet steps), alone
test-long: setup
	$(BIN)/python -m pytest -q -s -m long

# the documentation site (docs/, mkdocs.yml) into site/; --strict: any warning, a broken link say, fails it
# (NO_MKDOCS_2_WARNING: mkdocs-material's banner about its successor, printed on every build)
.PHONY: docs
docs: setup
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: setup browser-deps postgres-deps bench-deps
	$(BIN)/python bench/api_bench.py
	$(BIN)/python bench/browser_bench.py
	$(BIN)/python bench/train_bench.py
	$(BIN)/python bench/sandbox_bench.py
	$(BIN)/python bench/proxy_bench.py
	$(BIN)/python bench/proxy_bench.py --client h2load
	$(BIN)/python bench/proxy_bench.py --class-checks
	$(BIN)/python bench/queue_bench.py
	$(BIN)/python bench/slice_bench.py

# the abuse cases of docs/reliability.md's table; BEFORE=DIR measures an older tree beside this one
bench-attacks: setup
	$(BIN)/python bench/attack_bench.py $(if $(BEFORE),--before $(BEFORE))

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache artifacts site
