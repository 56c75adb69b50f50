# The two commands of the README. Both set up .venv themselves on first use.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test test-fast venv clean

venv:
	@bash scripts/setup-venv.sh

# The main job on the embedded default: profile SD 2.1 base at 512 px (random weights) on this machine.
demo: venv
	$(PY) -m diffprobe profile

# imports point down only (layers in pyproject.toml, docs/architecture.md), then the suite
test: venv
	$(VENV)/bin/lint-imports --no-cache
	$(PY) -m pytest -q

# the quick tier while developing: everything but the slow, compile, browser, scalesim, fullsize and gpu tests
test-fast: venv
	$(PY) -m pytest -q -m "not (slow or compile or browser or scalesim or fullsize or gpu)"

clean:
	rm -rf $(VENV) runs .pytest_cache
