PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
CHECKOV_VENV := .venv-checkov

.PHONY: run test lint clean

# Create the virtual environment and install the archive with its test tools.
$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

# checkov pins dependencies that clash with the archive's, so it lives in its own venv.
$(CHECKOV_VENV)/bin/checkov:
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install --quiet 'checkov==3.3.30'

# Start the archive on embedded defaults: data in ./vna-data (embedded PostgreSQL and a
# filesystem object store), DICOMweb on 127.0.0.1:8080, DIMSE on port 11112.  Ctrl-C stops it.
run: $(BIN)/.installed
	$(BIN)/vna serve

test: $(BIN)/.installed $(CHECKOV_VENV)/bin/checkov ohif
	$(BIN)/python -m pytest -q -ra -m "not soak"

# Long runs (minutes each): the tests marked soak (longer versions of the multi-node and
# delivery tests), then the C-STORE soak for VNA_SOAK_SECONDS (600 here; 60 in make test).
.PHONY: soak
soak: $(BIN)/.installed
	$(BIN)/python -m pytest -q -ra -m soak tests
	VNA_SOAK_SECONDS=$${VNA_SOAK_SECONDS:-600} $(BIN)/python -m pytest -q -ra \
	    tests/acceptance/test_soak.py

# The OHIF viewer's built site (npm package @ohif/app, its dist/) for the viewer acceptance
# test (tests/acceptance/test_ohif_viewer.py), fetched once into the ignored .cache/.  Without
# npm or the registry the test is skipped with the reason; nothing else depends on it.
OHIF_VERSION := 3.13.2
OHIF_DIR := .cache/ohif
.PHONY: ohif
ohif:
	@if [ "$$(cat $(OHIF_DIR)/VERSION 2>/dev/null)" = "$(OHIF_VERSION)" ] \
	    && [ -f $(OHIF_DIR)/package/dist/index.html ]; then :; \
	elif command -v npm >/dev/null 2>&1; then \
	  rm -rf $(OHIF_DIR) && mkdir -p $(OHIF_DIR) && cd $(OHIF_DIR) \
	  && npm pack --silent @ohif/app@$(OHIF_VERSION) >/dev/null \
	  && tar xzf ohif-app-$(OHIF_VERSION).tgz && rm -f ohif-app-$(OHIF_VERSION).tgz \
	  && echo $(OHIF_VERSION) > VERSION \
	  || echo "make: could not fetch @ohif/app; the OHIF acceptance test will be skipped" >&2; \
	else \
	  echo "make: npm is missing; the OHIF acceptance test will be skipped" >&2; \
	fi

lint: $(BIN)/.installed
	$(BIN)/ruff check vna lifecycle tests
	$(BIN)/ruff format --check vna lifecycle tests

# Rewrite schema/catalogue.sql from a scratch database after adding a migration.
.PHONY: schema-snapshot
schema-snapshot: $(BIN)/.installed
	$(BIN)/python -m vna.catalog.schema --write

clean:
	rm -rf $(VENV) $(CHECKOV_VENV) vna-data

# Side-by-side benchmark against Orthanc (see bench/README.md); pass options with ARGS=...
.PHONY: bench
bench: $(BIN)/.installed
	$(BIN)/python bench/ingest.py $(ARGS)

# Viewer side-by-side benchmark (open to first frame, frames/s, /rendered, multi-frame frame)
.PHONY: bench-viewer
bench-viewer: $(BIN)/.installed
	$(BIN)/python bench/viewer.py $(ARGS)

# DIMSE side-by-side benchmark (C-STORE, C-MOVE with dcmtk); pass options with ARGS=...
.PHONY: bench-dimse
bench-dimse: $(BIN)/.installed
	$(BIN)/python bench/dimse.py $(ARGS)
