"""--keep-runs through the CLI, on both servers: the journal keeps the last N runs (dry runs
count), from the flag or from a job file's keep_runs, and refuses a value below 1."""

from __future__ import annotations

import json


def run_ids(sync) -> list[int]:
    status = sync.cli("status", *sync.journal_args(), "--json", "--runs", "100")
    assert status.code == 0, status.err
    return [r["id"] for r in json.loads(status.out)["runs"]]


def plan_runs(sync) -> set[int]:
    return {r for (r,) in sync.journal_rows("SELECT DISTINCT run_id FROM plan_items")}


def test_keep_runs_bounds_the_history(sync, tmp_path):
    for night in range(4):
        sync.write(f"night{night}.txt", b"%d" % night)
        extra = ("--dry-run",) if night == 2 else ()
        result = sync.run("--keep-runs", "2", *extra)
        assert result.code == 0, result.err
    assert run_ids(sync) == [4, 3]
    assert plan_runs(sync) <= {3, 4}

    job = tmp_path / "job.toml"
    job.write_text(f'source = "{sync.src}"\ndestination = "{sync.dest}"\n'
                   f'{sync.journal_toml}\nkeep_runs = 1\n')
    sync.write("night4.txt", b"4")
    assert sync.cli("run", "--config", str(job)).code == 0
    assert run_ids(sync) == [5] and plan_runs(sync) == {5}


def test_keep_runs_below_one_is_refused(sync, tmp_path):
    result = sync.run("--keep-runs", "0")
    assert result.code == 2 and "--keep-runs must be between 1 and" in result.err
    job = tmp_path / "job.toml"
    job.write_text(f'source = "{sync.src}"\ndestination = "{sync.dest}"\nkeep_runs = "all"\n')
    bad = sync.cli("run", "--config", str(job))
    assert bad.code == 2 and "keep_runs must be a whole number" in bad.err
