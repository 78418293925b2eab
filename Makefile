# Two entry points: `make demo` (the whole pipeline on built-in synthetic data) and `make test`.
# Both create .venv and install the package with its dependencies from pyproject.toml.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-all install system-deps peers clean

# system-deps first: the C extension (loader/pipeline/_jpeg.c) compiles against libjpeg-turbo's headers
$(STAMP): pyproject.toml setup.py loader/pipeline/_jpeg.c loader/pipeline/_restart.c loader/pipeline/_resize.c loader/pipeline/_jpeg.h loader/data/_records.c | system-deps
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# Debian packages, installed when missing (as root with apt-get): libjpeg-turbo's headers for the CPU
# decoder extension (without them the loader falls back to DALI's slower CPU decoder and its tests
# fail), a C compiler, and WordNet 3.0's database files for `tagstream vocab --wordnet`.
APT_PACKAGES := libjpeg-dev:/usr/include/jpeglib.h gcc:/usr/bin/gcc wordnet-base:/usr/share/wordnet
system-deps:
	@missing=""; for pair in $(APT_PACKAGES); do [ -e "$${pair#*:}" ] || missing="$$missing $${pair%%:*}"; done; \
	if [ -n "$$missing" ] && command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	  (apt-get install -y -q $$missing >/dev/null 2>&1 || (apt-get update -q >/dev/null && apt-get install -y -q $$missing >/dev/null)) \
	  || echo "note: could not install$$missing"; \
	elif [ -n "$$missing" ]; then echo "note: missing Debian packages:$$missing"; fi

# `tagstream bench loader --peers`: the peer loaders (pyproject's `peers` extra) and FFCV's build dependencies;
# if FFCV still does not build, the others are installed and the bench skips FFCV, saying why
PEER_APT := libturbojpeg0-dev:/usr/include/turbojpeg.h libopencv-dev:/usr/include/opencv4 pkg-config:/usr/bin/pkg-config
peers: install
	@missing=""; for pair in $(PEER_APT); do [ -e "$${pair#*:}" ] || missing="$$missing $${pair%%:*}"; done; \
	if [ -n "$$missing" ] && command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	  (apt-get install -y -q $$missing >/dev/null 2>&1 || (apt-get update -q >/dev/null && apt-get install -y -q $$missing >/dev/null)) \
	  || echo "note: could not install$$missing"; fi
	$(BIN)/python -m pip install -q -e '.[peers]' || \
	  ($(BIN)/python -m pip install -q mosaicml-streaming litdata webdataset && echo "note: FFCV did not install; the bench skips it")
	@# mosaicml-streaming 0.10 (the newest for NumPy >= 2.2) pins google-cloud-storage < 2.11, which breaks gcsfs
	@# (the storage extra: `import gcsfs` fails); streaming reads local MDS shards with the newer one
	$(BIN)/python -m pip install -q 'google-cloud-storage>=3.14.1'
	$(BIN)/python -c "import gcsfs, streaming"

demo: install
	$(BIN)/tagstream demo --out demo-out --overwrite

# the long end-to-end tests (marked `slow`: a million-member tar, every kill point of a merge, a train from
# s3://, the peer loaders) run in `make test-all`; each has a faster sibling that `make test` runs
test: install
	$(BIN)/python -m pytest -q -m "not slow"

test-all: install
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) demo-out
