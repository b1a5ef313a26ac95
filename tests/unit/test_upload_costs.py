"""What large files' uploads cost the client, shown by counts, not times (issue 14).

The part loop's own cost grows with the parts, not with their square: before each part it
asked every earlier part's future whether it had failed, which for a file of 10,000 parts
(every file from 78 GiB up, at 8 MiB parts) was 50 million questions, about 50 CPU-s
holding the GIL; a failed part is now noted once, by its future's callback. A part read
into a buffer of ours goes to botocore without a copy of it. And threads share the run's
botocore client rather than making one each."""

from __future__ import annotations

import concurrent.futures

import pytest

from journalsync.config import MiB
from tests.support.proxy import Fault
from tests.unit.test_multipart import on, on_moto, world  # noqa: F401 - world is a fixture

PARTS = 30  # of 1 MiB: part_size_for makes no part smaller


def counting_done(monkeypatch) -> list[int]:
    """Count Future.done() calls from here on (a real Future's answer, counted)."""
    calls = [0]
    done = concurrent.futures.Future.done

    def counted(self):
        calls[0] += 1
        return done(self)

    monkeypatch.setattr(concurrent.futures.Future, "done", counted)
    return calls


@on_moto
def test_the_part_loop_asks_each_part_once(world, monkeypatch):  # noqa: F811
    w = world()
    w.write(b"p", PARTS * MiB)
    calls = counting_done(monkeypatch)
    result, _ = w.upload()
    assert result.ok and w.part_numbers() == list(range(1, PARTS + 1))
    assert calls[0] <= 2 * PARTS  # was PARTS * (PARTS - 1) / 2: 435


@on_moto
def test_a_failed_part_still_stops_the_loop(world):  # noqa: F811
    w = world()
    w.proxy.hook = on("UploadPart", Fault(status=400, code="InvalidArgument"), number=2)
    w.write(b"q", PARTS * MiB)
    with pytest.raises(Exception):
        w.upload()
    # the loop saw part 2's failure and sent no more than the parts already in flight
    assert max(w.part_numbers()) < PARTS


def test_a_full_part_is_sent_from_its_buffer_without_a_copy():
    """botocore's body for a part read into a buffer of ours: the buffer itself when the
    part fills it (no 8 MiB copy per part), a copy of the bytes for a short last part."""
    from types import SimpleNamespace

    from journalsync.partsend import PartSender

    sender = SimpleNamespace(clients=SimpleNamespace(bandwidth=None))
    buf = bytearray(b"abcdef")
    assert PartSender._body(sender, memoryview(buf)[:6]) is buf
    short = PartSender._body(sender, memoryview(buf)[:4])
    assert short == b"abcd" and short is not buf


def test_threads_share_the_runs_client_for_the_connect_timeout_of_their_start(tmp_path):
    """One botocore client for every thread that starts before the endpoint has answered,
    one (with the long connect timeout) for every thread after: not one per thread, each
    5-15 ms of CPU to make."""
    import threading

    from journalsync.clients import CONNECT_TIMEOUT, CONNECT_TIMEOUT_ANSWERED
    from tests.mutation_support.s3env import ClientFactory, make_config

    clients = ClientFactory(make_config("http://127.0.0.1:9", "bkt", tmp_path, workers=4))
    got: list = []

    def take():
        got.append(clients.get())

    def on_threads(n: int) -> None:
        threads = [threading.Thread(target=take) for _ in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    on_threads(4)
    clients.reach.answered = True
    on_threads(4)
    early, late = got[:4], got[4:]
    assert len({id(c) for c in early}) == 1 and len({id(c) for c in late}) == 1
    assert early[0].meta.config.connect_timeout == CONNECT_TIMEOUT
    assert late[0].meta.config.connect_timeout == CONNECT_TIMEOUT_ANSWERED
