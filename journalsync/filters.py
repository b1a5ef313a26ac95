"""--include / --exclude: which keys a run looks at at all.

Precedence, simple enough to predict:

1. With no --include, every key is included; with any, only keys matching one of them.
2. A key matching any --exclude is excluded, whatever the includes say (exclude wins).

An excluded key is never uploaded and never deleted: excluded files are not scanned, and
objects whose keys are excluded are never extras.

Glob syntax, matched against the key (the path relative to the source, `/`-separated):
`*` any run of characters within one path segment, `?` one character, `[abc]` a class,
`**` any run of characters across segments (`logs/**` is everything under logs/, `**/x`
is x in any directory). A pattern without a `/` matches the file name in any directory
(`*.tmp`); one with a `/` matches from the root of the source (`build/*.o`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache


def is_anchored(pattern: str) -> bool:
    return "/" in pattern.strip("/")


@lru_cache(maxsize=256)
def compile_glob(pattern: str, anchored: bool | None = None) -> re.Pattern:
    """The regex for one glob; a slash-free pattern may sit in any directory."""
    anchored = is_anchored(pattern) if anchored is None else anchored
    body = pattern.strip("/")
    out, i = [], 0
    while i < len(body):
        c = body[i]
        if body.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif body.startswith("**", i):
            out.append(".*")
            i += 2
        elif c == "*":
            out.append("[^/]*")
            i += 1
        elif c == "?":
            out.append("[^/]")
            i += 1
        elif c == "[":
            end = body.find("]", i + 1)
            if end == -1:
                out.append(re.escape(c))
                i += 1
            else:
                cls = body[i + 1:end].replace("\\", "\\\\")
                out.append(f"[{'^' if cls.startswith('!') else ''}{cls.lstrip('!')}]")
                i = end + 1
        else:
            out.append(re.escape(c))
            i += 1
    prefix = "" if anchored else "(?:.*/)?"
    return re.compile(f"{prefix}{''.join(out)}", re.DOTALL)


@dataclass(frozen=True, slots=True)
class KeyFilter:
    includes: tuple[str, ...] = ()
    excludes: tuple[str, ...] = ()

    @property
    def active(self) -> bool:
        return bool(self.includes or self.excludes)

    def selected(self, key: str) -> bool:
        """Is this key part of the sync?"""
        if self.includes and not any(compile_glob(p).fullmatch(key) for p in self.includes):
            return False
        return not any(compile_glob(p).fullmatch(key) for p in self.excludes)

    def may_contain(self, dir_key: str) -> bool:
        """Could anything under this directory be selected? Lets the walk skip a directory
        that an exclude of the form `DIR/**` (`node_modules/**`, `**/.git/**`) removes whole."""
        return not any(
            p.rstrip("/").endswith("/**") and compile_glob(
                p.rstrip("/")[:-3], is_anchored(p)).fullmatch(dir_key)
            for p in self.excludes)
