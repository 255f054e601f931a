# hubvoice: the two commands of the README are `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
WORK ?= work

.PHONY: demo test lint setup system-deps bench-synth context model clean

$(VENV)/.system-stamp: deploy/install-system-deps.sh
	bash deploy/install-system-deps.sh
	@mkdir -p $(VENV) && touch $@

$(VENV)/.stamp: pyproject.toml setup.py assistant/_search.c
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[distill,whisper,dev,demo]'
	touch $@

system-deps: $(VENV)/.system-stamp

setup: $(VENV)/.system-stamp $(VENV)/.stamp

## the main job: the shipped smart_home model hears its sample commands and publishes them over MQTT
demo: setup
	$(VENV)/bin/hubvoice demo

test: setup
	$(VENV)/bin/pytest -q

lint: setup
	$(VENV)/bin/ruff check assistant distill models tests benchmarks
	$(VENV)/bin/mypy assistant distill models

## the default model's context: Home Assistant's English templates + a generic home's lists
HA_INTENTS := $(shell cat examples/home_assistant/intents.txt)
context: setup
	$(VENV)/bin/hubvoice context check --hassil installed --intents '$(HA_INTENTS)' \
		--lists examples/home_assistant/lists.yaml -o examples/home_assistant/smart_home.yaml

## rebuild the shipped default bundle models/smart_home from scratch (an hour or more and ~8 GB of memory on 2 cores; see docs/BENCHMARKS.md)
SEED ?= 0
model: setup
	$(VENV)/bin/hubvoice-distill build examples/home_assistant/smart_home.yaml -o models/smart_home \
		--preset default --seed $(SEED) --work $(WORK) --overwrite --no-progress

bench-synth: setup
	$(PY) benchmarks/bench_synth.py --out $(WORK)/bench-synth

clean:
	rm -rf $(WORK) .pytest_cache .mypy_cache .ruff_cache
