# Two entry points: `make demo` (the whole pipeline on built-in synthetic data) and `make test`.
# Both create .venv and install the package with its dependencies from pyproject.toml.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test install system-deps clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP) system-deps

# WordNet 3.0 database files for `tagstream vocab --wordnet` (Debian's wordnet-base); optional
system-deps:
	@if [ ! -d /usr/share/wordnet ] && command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	  (apt-get install -y -q wordnet-base >/dev/null 2>&1 || (apt-get update -q >/dev/null && apt-get install -y -q wordnet-base >/dev/null)) \
	  || echo "note: could not install wordnet-base; WordNet tests will be skipped"; fi

demo: install
	$(BIN)/tagstream demo --out demo-out --overwrite

test: install
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) demo-out
