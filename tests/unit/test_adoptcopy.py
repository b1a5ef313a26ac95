"""adoptcopy.py's pure rules: which grants a copy onto itself repeats (Grant* headers),
and what a HEAD shows that a copy would drop (the object is then left alone)."""

from __future__ import annotations

import datetime

import pytest

from journalsync.adoptcopy import grant_args, not_carried
from journalsync.journal.uploads import COPY_MARK, UploadRecord

OWNER = "75aa57f0"
ALL_USERS = "http://acs.amazonaws.com/groups/global/AllUsers"


def user(uid: str, permission: str) -> dict:
    return {"Grantee": {"Type": "CanonicalUser", "ID": uid}, "Permission": permission}


def group(uri: str, permission: str) -> dict:
    return {"Grantee": {"Type": "Group", "URI": uri}, "Permission": permission}


def acl(*grants: dict) -> dict:
    return {"Owner": {"ID": OWNER}, "Grants": list(grants)}


@pytest.mark.parametrize("policy, expected", [
    (acl(user(OWNER, "FULL_CONTROL")), {}),  # private: what a copy gets anyway
    (acl(), {}),
    (acl(user(OWNER, "FULL_CONTROL"), group(ALL_USERS, "READ")),  # public-read
     {"GrantFullControl": f'id="{OWNER}"', "GrantRead": f'uri="{ALL_USERS}"'}),
    (acl(user(OWNER, "FULL_CONTROL"), user("other", "FULL_CONTROL"), user("aud", "READ_ACP")),
     {"GrantFullControl": f'id="{OWNER}", id="other"', "GrantReadACP": 'id="aud"'}),
    (acl(user(OWNER, "READ")), {"GrantRead": f'id="{OWNER}"'}),  # the owner's own grant cut
    (acl(user(OWNER, "FULL_CONTROL"), group(ALL_USERS, "WRITE")), None),  # no header for it
    (acl(user(OWNER, "FULL_CONTROL"), {"Grantee": {"Type": "Group"}, "Permission": "READ"}), None),
])
def test_grant_args(policy, expected):
    assert grant_args(policy) == expected


@pytest.mark.parametrize("head, lost", [
    ({"ContentType": "text/html"}, None),
    ({"ObjectLockMode": "GOVERNANCE",
      "ObjectLockRetainUntilDate": datetime.datetime(2030, 1, 1)}, "Object Lock retention"),
    ({"ObjectLockLegalHoldStatus": "ON"}, "an Object Lock legal hold"),
    ({"ObjectLockLegalHoldStatus": "OFF"}, None),
    ({"Expires": datetime.datetime(2030, 1, 1)}, "an Expires header"),
    ({"ExpiresString": "not a date"}, "an Expires header"),
    ({"WebsiteRedirectLocation": "/new.html"}, "a website redirect"),
])
def test_not_carried(head, lost):
    assert not_carried(head) == lost


def test_a_copy_record_is_never_a_file_upload():
    base = dict(upload_id="u", key="k", run_id=1, part_size=5, size=9, mtime_ns=1, ctime_ns=1,
                inode=1, created_at=0.0, state="active")
    assert UploadRecord(sha256="ab" * 32, **base).kind == "upload"
    assert UploadRecord(sha256=COPY_MARK + "ab" * 32, **base).kind == "adopt-copy"
