# hubvoice: the two commands of the README are `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
WORK ?= work

.PHONY: demo test lint setup system-deps bench-synth clean

$(VENV)/.system-stamp: deploy/install-system-deps.sh
	bash deploy/install-system-deps.sh
	@mkdir -p $(VENV) && touch $@

$(VENV)/.stamp: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[distill,whisper,dev]'
	touch $@

system-deps: $(VENV)/.system-stamp

setup: $(VENV)/.system-stamp $(VENV)/.stamp

## the main job: until the runtime lands, a synthesis demo of the smart-home example context
demo: setup
	$(VENV)/bin/hubvoice-distill synth examples/lights.yaml -o $(WORK)/demo-corpus --utterances 24 --seed 1
	$(VENV)/bin/hubvoice-distill corpus-stats $(WORK)/demo-corpus

test: setup
	$(VENV)/bin/pytest -q

lint: setup
	$(VENV)/bin/ruff check assistant distill models tests benchmarks
	$(VENV)/bin/mypy assistant distill models

bench-synth: setup
	$(PY) benchmarks/bench_synth.py --out $(WORK)/bench-synth

clean:
	rm -rf $(WORK) .pytest_cache .mypy_cache .ruff_cache
