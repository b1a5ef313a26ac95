"""The transfer settings `run` and `worker` share (jobfile.transfer_settings): a worker has no
options of these, so its job file's must reach it, and without one it must send the way a
run with no options does. Before, a worker built its Config by hand and dropped the job
file's checksum and large_files."""

from __future__ import annotations

import dataclasses

from journalsync import jobfile
from journalsync.config import Config, Destination, MiB


def _from_job_file(path) -> dict:
    """The parameters a worker gets from a job file (as jobfile.with_job maps them)."""
    data = jobfile.load(path)
    found = {}
    for name, (section, key) in jobfile.JOB_KEYS.items():
        table = data.get(section, {}) if section else data
        if key in table:
            found[name] = table[key]
    return found


def test_a_workers_job_file_gives_it_every_transfer_setting(tmp_path):
    job = tmp_path / "job.toml"
    job.write_text('checksum = "MD5"\nlarge_files = "prehash"\npart_size = "16MiB"\n'
                   'multipart_threshold = "32MiB"\nstorage_class = "STANDARD_IA"\n'
                   'provider = "minio"\nretry_timeout = "90s"\ncrt = false\nworkers = 3\n')
    settings = jobfile.transfer_settings(_from_job_file(job))
    assert {name: settings[name] for name in (
        "checksum", "large_files", "part_size", "multipart_threshold", "storage_class",
        "provider", "retry_timeout", "crt", "workers")} == {
        "checksum": "md5", "large_files": "prehash", "part_size": 16 * MiB,
        "multipart_threshold": 32 * MiB, "storage_class": "STANDARD_IA", "provider": "minio",
        "retry_timeout": 90.0, "crt": False, "workers": 3}


def test_without_a_job_file_a_worker_sends_as_a_run_does_by_default(tmp_path):
    cfg = Config(source=tmp_path, dest=Destination.parse("s3://bucket/p"),
                 journal_path=tmp_path / "j", **jobfile.transfer_settings({}))
    defaults = Config(source=tmp_path, dest=Destination.parse("s3://bucket/p"),
                      journal_path=tmp_path / "j")
    for name in jobfile.transfer_settings({}):
        assert getattr(cfg, name) == getattr(defaults, name), name
    assert dataclasses.replace(cfg).validate()
