PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.fxkit-installed

.PHONY: demo test bench bench-quick lint docs clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[test,docs]"
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m fxkit demo

lint: $(STAMP)
	$(PY) -m ruff check src tests benchmarks scripts docs/conf.py docs/_ext
	$(PY) -m ruff format --check src tests benchmarks scripts docs/conf.py docs/_ext
	$(PY) -m mypy

test: $(STAMP) lint
	$(PY) -m pytest -q -n 2 -p no:cacheprovider

docs: $(STAMP)
	$(PY) -m sphinx -W --keep-going -b html docs docs/_build

bench: $(STAMP)
	$(PY) -m benchmarks.run

bench-quick: $(STAMP)
	$(PY) -m benchmarks.run --quick

clean:
	rm -rf $(VENV) build dist src/*.egg-info
