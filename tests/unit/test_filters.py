"""Include/exclude globs: a table of keys and verdicts."""

from __future__ import annotations

import pytest

from journalsync.filters import KeyFilter


@pytest.mark.parametrize("includes, excludes, key, selected", [
    ((), (), "a/b.txt", True),
    ((), ("*.tmp",), "x.tmp", False),
    ((), ("*.tmp",), "deep/dir/x.tmp", False),  # slash-free: the name in any directory
    ((), ("*.tmp",), "x.tmp.keep", True),
    ((), ("build/*.o",), "build/a.o", False),
    ((), ("build/*.o",), "build/sub/a.o", True),  # * stays within one segment
    ((), ("build/*.o",), "src/build/a.o", True),  # a pattern with / is anchored
    ((), ("logs/**",), "logs/2026/11/a.log", False),
    ((), ("**/.git/**",), "repo/.git/HEAD", False),
    ((), ("**/.git/**",), ".git/config", False),
    ((), ("?.txt",), "a.txt", False),
    ((), ("?.txt",), "ab.txt", True),
    ((), ("[ab].txt",), "b.txt", False),
    ((), ("[!ab].txt",), "b.txt", True),
    (("*.jpg",), (), "photos/a.jpg", True),
    (("*.jpg",), (), "photos/a.png", False),
    (("photos/**",), ("*.tmp",), "photos/x.tmp", False),  # exclude wins
    (("photos/**",), ("*.tmp",), "photos/x.jpg", True),
    (("photos/**",), (), "other/x.jpg", False),
])
def test_selected(includes, excludes, key, selected):
    assert KeyFilter(includes, excludes).selected(key) is selected


@pytest.mark.parametrize("excludes, dir_key, may", [
    (("node_modules/**",), "node_modules", False),
    (("node_modules/**",), "src", True),
    (("node_modules/**",), "src/node_modules", True),  # anchored: only the top one
    (("**/node_modules/**",), "src/node_modules", False),
    (("**/.git/**",), "a/b/.git", False),
    (("*.tmp",), "d", True),
    (("logs/*",), "logs", True),  # only files directly in logs/ are out; deeper ones stay
])
def test_may_contain(excludes, dir_key, may):
    assert KeyFilter((), excludes).may_contain(dir_key) is may
