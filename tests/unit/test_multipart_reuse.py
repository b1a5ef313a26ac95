"""Which part a resumed upload may take from the server instead of sending it again."""

from __future__ import annotations

import hashlib

import pytest

from journalsync.partsend import HeldPartChanged, PartSender


@pytest.mark.parametrize("held, journaled, data, reusable", [
    (None, None, b"x", False),
    (('"e"', 2), '"e"', b"x", False),  # size differs
    (('"e"', 1), '"e"', b"x", True),  # the ETag we journaled
    ((f'"{hashlib.md5(b"x").hexdigest()}"', 1), None, b"x", True),  # the MD5 of our bytes
    (('"e"', 1), '"f"', b"x", False),
])
def test_reusable(held, journaled, data, reusable):
    md5 = hashlib.md5(data).hexdigest()
    # Our bytes' MD5 as a function (read parts) or as the pre-hash's hex (streamed parts).
    assert PartSender._reusable(held, journaled, len(data), lambda: md5) is reusable
    assert PartSender._reusable(held, journaled, len(data), md5) is reusable


@pytest.mark.parametrize("held, journaled, reusable", [
    (('"e"', 1), '"e"', True),  # the ETag we journaled when the store took the part
    ((f'"{hashlib.md5(b"x").hexdigest()}"', 1), None, False),  # no MD5 of ours to match
    ((f'"{hashlib.md5(b"x").hexdigest()}"', 1), '"f"', False),
])
def test_without_our_md5_only_the_journaled_etag_proves_a_held_part(held, journaled, reusable):
    """A pre-hash for a store that checks CRCs has no MD5 (integrity.py): an ETag that
    merely looks like an MD5 proves nothing, only the one journaled for our send does."""
    assert PartSender._reusable(held, journaled, 1, None) is reusable


def test_a_held_part_with_a_non_md5_etag_of_unchanged_bytes_is_no_changed_file():
    """Review: with --sse aws:kms a part's ETag is 32 hex digits that are not the MD5 of its
    bytes. A streamed resume whose held part is ours by the journal must not be taken for
    a changed file there (HeldPartChanged: every resume would start the file over); the
    part is sent again instead. Where ETags are MD5s, other bytes now are a changed file."""
    data = b"the very bytes the earlier run sent"
    kms_etag = '"' + hashlib.md5(b"kms:" + data).hexdigest() + '"'  # no MD5 of the bytes
    PartSender._check_streamed_held((kms_etag, len(data)), kms_etag, data, md5_etags=False)
    with pytest.raises(HeldPartChanged):
        PartSender._check_streamed_held((kms_etag, len(data)), kms_etag, data, md5_etags=True)
    md5_etag = '"' + hashlib.md5(data).hexdigest() + '"'
    PartSender._check_streamed_held((md5_etag, len(data)), md5_etag, data, md5_etags=True)
    assert not PartSender._reusable((kms_etag, len(data)), None, len(data),
                                    lambda: hashlib.md5(data).hexdigest())  # sent again
