"""What a no-op run loads (tests/unit/test_startup.py has --help's and the journal's): the
modules of the phases it does not reach stay unimported, and a journal at the newest schema
never loads Alembic. Checked by sys.modules, never by how long anything takes."""

from __future__ import annotations

import subprocess
import sys

import pytest

# The CLI's entry point, then every module it loaded, on the last line.
PROBE = """\
import sys
from journalsync.cli import main
sys.argv = ["journalsync", *sys.argv[1:]]
try:
    main()
except SystemExit:
    pass
print("\\nLOADED", " ".join(sorted(sys.modules)))
"""

# Needed only by --adopt-metadata (adoptcopy), deletes (deleter), a schema upgrade (alembic).
NOT_FOR_A_NOOP = {"journalsync.adoptcopy", "journalsync.deleter", "alembic"}


@pytest.mark.one_server
@pytest.mark.sqlite_only("what a process imports does not depend on the journal's kind")
def test_a_noop_run_loads_neither_alembic_nor_the_phases_it_skips(sync):
    sync.write("a.txt", b"a")
    sync.write("b/c.txt", b"c")
    assert sync.run().code == 0  # the first run uploads (and creates the journal)
    proc = subprocess.run([sys.executable, "-c", PROBE, *sync.run_args()], env=sync.env(),
                          capture_output=True, text=True, timeout=180)
    assert "uploaded=0" in proc.stdout and "skipped=2" in proc.stdout, (proc.stdout, proc.stderr)
    last = proc.stdout.rstrip().splitlines()[-1]
    assert last.startswith("LOADED "), proc.stdout
    loaded = set(last.split()[1:])
    assert "journalsync.engine" in loaded and "botocore.client" in loaded  # it did run
    assert loaded & NOT_FOR_A_NOOP == set()
