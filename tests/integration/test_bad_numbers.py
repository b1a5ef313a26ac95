"""Numbers and booleans the user gives wrongly: a usage error at once (exit 2, one line),
never a traceback or exit 70 long after the run began, and never a mass delete. Found by
a hostile try-out: a size of 401 digits (float inf), --keep-runs beyond 64 bits (a
journal column, after the uploads), a lease too long for a timer (the heartbeat thread),
`force = "false"` in [delete] (a non-empty string: true) and a source that is a symlink
loop."""

from __future__ import annotations

import pytest

HUGE = "1" + "0" * 400  # 401 digits: float() makes it inf


def one_line(result, *words: str) -> None:
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    for word in words:
        assert word in lines[0], lines[0]


@pytest.mark.parametrize("option, value, words", [
    ("--part-size", HUGE, ("size", "too large")),
    ("--multipart-threshold", "9" * 30, ("size", "too large")),
    ("--bwlimit", HUGE + "MiB", ("size", "too large")),
    ("--chunk-bytes", HUGE, ("size", "too large")),
    ("--keep-runs", "99999999999999999999999", ("--keep-runs",)),
    ("--lease", "99999999999999999999", ("duration", "too long")),
    ("--lease", "2d", ("--lease", "a day")),
    ("--resume-max-age", HUGE, ("duration", "too long")),
    ("--retry-timeout", "9" * 30 + "w", ("duration", "too long")),
    ("--chunk-files", "99999999999999999999999", ("--chunk-files", "too large")),
])
def test_a_number_too_large_is_a_usage_error(offline_sync, option, value, words):
    offline_sync.write("a.txt", b"a")
    result = offline_sync.run(option, value)
    assert result.code == 2, (result.code, result.err)
    one_line(result, *words)


def _job(sync, tmp_path, delete_table: str) -> str:
    job = tmp_path / "job.toml"
    job.write_text(f'source = "{sync.src}"\ndestination = "{sync.dest}"\n'
                   f"{sync.journal_toml}\n[delete]\n{delete_table}\n")
    return str(job)


@pytest.mark.one_server
@pytest.mark.parametrize("table", ['enabled = true\nforce = "false"',
                                   'enabled = true\nallow_empty_source = "no"\nforce = "no"',
                                   'enabled = "true"'])
def test_a_quoted_boolean_in_the_delete_table_is_refused_and_nothing_deleted(sync, s3client,
                                                                               tmp_path, table):
    """Before: `force = "false"` was taken as true, the 10% cap lifted, and 9 of 10 objects
    deleted with exit 0."""
    for i in range(10):
        sync.write(f"f{i}.txt", f"file {i}".encode())
    assert sync.run().code == 0
    for i in range(1, 10):
        (sync.src / f"f{i}.txt").unlink()
    result = sync.cli("run", "--config", _job(sync, tmp_path, table))
    left = s3client.list_objects_v2(Bucket=sync.bucket, Prefix=sync.prefix + "/").get("KeyCount")
    assert left == 10, f"{10 - left} objects deleted; exit {result.code}: {result.out}"
    assert result.code == 2, (result.code, result.err)
    one_line(result, "job file", "true or false")


@pytest.mark.parametrize("table, words", [
    ('enabled = true\nmax_percent = "5"', ("max_percent", "a number")),
    ('enabled = true\nmax_count = "5"', ("max_count", "whole number")),
    ('enabled = true\nmax_count = 5.5', ("max_count", "whole number")),
    ('enabled = true\nmax_percent = true', ("max_percent", "a number")),
])
def test_a_quoted_number_in_the_delete_table_is_a_usage_error(offline_sync, tmp_path, table, words):
    offline_sync.write("a.txt", b"a")
    result = offline_sync.cli("run", "--config", _job(offline_sync, tmp_path, table))
    assert result.code == 2, (result.code, result.err)
    one_line(result, "job file", *words)


def test_an_unquoted_number_in_the_delete_table_is_taken(offline_sync, tmp_path):
    """The strict check refuses strings, not numbers: max_percent = 2.5 and max_count = 5
    get past the job file (the run then fails only for want of a server)."""
    offline_sync.write("a.txt", b"a")
    job = _job(offline_sync, tmp_path, "enabled = true\nmax_percent = 2.5\nmax_count = 5")
    result = offline_sync.cli("run", "--config", job, "--retry-timeout", "1s")
    assert "job file" not in result.err, result.err
    assert result.code not in (2, 70), (result.code, result.err)


@pytest.mark.parametrize("under", ["", "/sub"])
@pytest.mark.parametrize("delete", [False, True], ids=["plain", "delete"])
def test_a_source_that_is_a_symlink_loop_is_said_in_one_line(offline_sync, tmp_path, under,
                                                              delete):
    """Before: Path.resolve() raised RuntimeError in default_journal_path: exit 70. Now the
    loop is named, with the exit a missing source gets (2; with --delete, 3: the guard)."""
    (tmp_path / "loop1").symlink_to(tmp_path / "loop2")
    (tmp_path / "loop2").symlink_to(tmp_path / "loop1")
    result = offline_sync.cli("run", str(tmp_path / "loop1") + under, offline_sync.dest,
                              *offline_sync.journal_args(), *(["--delete"] if delete else []))
    assert result.code == (3 if delete else 2), (result.code, result.err)
    one_line(result, "loop1", "symbolic links")
