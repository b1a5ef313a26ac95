"""Column types shared by schema.py and the migrations. Frozen: a migration that ran on a
journal must build the same thing forever, so these never change; a new type gets a new
name here (and the migration that introduces it uses that).

The same on SQLite and PostgreSQL (on SQLite they are exactly Integer and Text).
PostgreSQL's INTEGER is 32 bits, and sizes, inodes, nanosecond times and, some day, row
ids do not fit: BIGINT there (SQLite's INTEGER is 64 bits already, and only INTEGER
PRIMARY KEY is a rowid). Both are signed: an inode number of 2^63 or more (NFS, FUSE,
overlayfs) is kept as its two's complement, made once where st_ino is read
(objectmeta.inode_number), so every statement, typed or raw, stores and compares that.
Keys and paths compare and sort in binary order (byte order of UTF-8 = code point order =
Python's sort), as in SQLite: the scan's ranges [dir/, dir0) and every keyset page rely on
it, whatever collation the database was created with.
"""

from __future__ import annotations

from sqlalchemy import TEXT, BigInteger, Integer, Text

Int = Integer().with_variant(BigInteger(), "postgresql")
# sqlalchemy.TEXT is the very class sqlalchemy.dialects.postgresql exports as TEXT: named
# from here, a SQLite journal's run does not import the PostgreSQL dialect at all.
Key = Text().with_variant(TEXT(collation="C"), "postgresql")
