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

test: $(BIN)/.installed $(CHECKOV_VENV)/bin/checkov
	$(BIN)/python -m pytest -q -ra

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

# DIMSE side-by-side benchmark (C-STORE, C-MOVE with dcmtk); pass options with ARGS=...
.PHONY: bench-dimse
bench-dimse: $(BIN)/.installed
	$(BIN)/python bench/dimse.py $(ARGS)
