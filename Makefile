# The two commands of the README: `make run` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DATA ?= ./licenseserver-data
PORT ?= 35355
WEB ?= 8088

.PHONY: run test venv clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Installed as a plain package (not editable) so that twisted/plugins is found.
$(VENV)/.installed: $(BIN)/python setup.py $(shell find licenseserver twisted -name '*.py' -o -name '*.xhtml' -o -name '*.css' -o -name '*.js')
	$(BIN)/pip install --quiet '.[test]'
	rm -rf build
	touch $@

venv: $(VENV)/.installed

run: venv
	@echo "licenseserver: licensing on port $(PORT), admin page http://localhost:$(WEB)/"
	@echo "licenseserver: the first admin password is in $(DATA)/initial-admin-password"
	$(BIN)/twistd --nodaemon --pidfile= licenseserver --data $(DATA) \
		--port tcp:$(PORT) --web tcp:$(WEB)

test: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m twisted.trial tests

clean:
	rm -rf $(VENV) build _trial_temp *.egg-info
