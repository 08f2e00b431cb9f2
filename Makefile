# The two commands of the README: `make run` and `make test`. Both set up a virtual
# environment first; `make test` also installs the system packages its tests drive
# (Chromium and chromedriver for the browser test, promtool for the metrics test).
#
# PYTHON picks the interpreter: `make test PYTHON=python3.13` builds and uses .venv-3.13,
# so that the suite can run on each supported Python side by side; the default python3
# uses .venv.
PYTHON ?= python3
PYVERSION := $(shell $(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)
VENV ?= $(if $(filter python3,$(PYTHON)),.venv,.venv-$(PYVERSION))
BIN := $(VENV)/bin
DATA ?= ./licenseserver-data
PORT ?= 35355
WEB ?= 8088

.PHONY: run test venv system-packages clean

$(BIN)/python:
	@test -n "$(PYVERSION)" || { echo "make: $(PYTHON) is not a Python interpreter" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Installed as a plain package (not editable) so that twisted/plugins is found.
$(VENV)/.installed: $(BIN)/python setup.py $(shell find licenseserver twisted -name '*.py' -o -name '*.xhtml' -o -name '*.css' -o -name '*.js' -o -name '*.svg')
	$(BIN)/pip install --quiet '.[test]'
	rm -rf build
	touch $@

venv: $(VENV)/.installed

system-packages:
	@./tools/system-packages

run: venv
	@echo "licenseserver: licensing on port $(PORT), admin page http://localhost:$(WEB)/"
	@echo "licenseserver: the first admin password is in $(DATA)/initial-admin-password"
	$(BIN)/twistd --nodaemon --pidfile= licenseserver --data $(DATA) \
		--port tcp:$(PORT) --web tcp:$(WEB)

test: venv system-packages
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m twisted.trial tests

clean:
	rm -rf .venv .venv-* build _trial_temp *.egg-info
