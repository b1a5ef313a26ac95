# The two commands a fresh machine needs: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-test

.PHONY: demo test clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

## demo: local S3 server, sync a sample tree three times, show status
demo: $(STAMP)
	$(PY) demo/demo.py

## test: the whole suite, against moto and rclone serve s3
test: $(STAMP)
	$(PY) -m pytest

clean:
	rm -rf .demo .bench
