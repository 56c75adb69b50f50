# The two commands of the README. Both set up .venv themselves on first use.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test test-fast validate venv clean

venv:
	@bash scripts/setup-venv.sh

# The main job on the embedded default: profile SD 2.1 base at 512 px (random weights) on this machine.
demo: venv
	$(PY) -m diffprobe profile

# imports point down only (layers in pyproject.toml, docs/architecture.md), then the suite (the published-figure
# reproductions aside: make validate)
test: venv
	$(VENV)/bin/lint-imports --no-cache
	$(PY) -m pytest -q -m "not validation"

# the quick tier while developing: everything but the slow, compile, browser, scalesim, fullsize, gpu and validation tests
test-fast: venv
	$(PY) -m pytest -q -m "not (slow or compile or browser or scalesim or fullsize or gpu or validation)"

# docs/validation.md's rows: published figures reproduced by full-size analytic runs (CI runs it after make test)
validate: venv
	$(PY) -m pytest -q -m validation

clean:
	rm -rf $(VENV) runs .pytest_cache
