"""`make mutate`: mutation testing of the safety-critical modules with mutmut 3.

mutmut copies the package into mutants/, rewrites every function of the modules named in
pyproject.toml's [tool.mutmut] `only_mutate` into variants (a `<` turned `<=`, a string
changed, an argument dropped...) and, for each variant, runs only the unit tests that
called that function when it recorded them (tests/unit, never the slow crash and fault
tests). A variant no test notices "survives": either a test is missing or the change
makes no difference (an equivalent mutant). This script runs mutmut over the groups
below and sql_mutants.py over the SQL that picks the files to hash again, then prints
killed / total per group and every survivor, so the score can be compared before and
after a change.

    python -m tests.mutation_support.mutate            # run, then report
    python -m tests.mutation_support.mutate --report   # report on the last run only
    python -m tests.mutation_support.mutate guard plan # some groups only
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

# Group name -> mutant-name globs. scan is limited to its change detection (the identity
# compared between scans, hashing with the before/after fstat check, and staging of rows);
# walking and key naming are outside this run.
GROUPS: dict[str, list[str]] = {
    "guard": ["journalsync.guard.*"],
    "plan": ["journalsync.plan.*"],
    "deleter": ["journalsync.deleter.*"],
    "multipart": ["journalsync.multipart.*", "journalsync.partsend.*"],
    "retry": ["journalsync.retry.*"],
    "scan": [f"journalsync.scan.x_{name}__mutmut_*" for name in
                                ("_identity", "hash_file", "_stat_fields", "_stage_row",
                                 "_hash_changed")],
}

# The SQL of Journal.iter_files_to_hash, mutated by sql_mutants.py (mutmut skips SQL text).
SQL = "store-sql"
SQL_RESULTS = Path("mutants/sql.json")

# mutmut's exit codes (mutmut/stats.py): 1 and 3 a test failed, 0 every test passed.
STATUS = {1: "killed", 3: "killed", 0: "survived", 33: "no tests", 5: "no tests",
          36: "timeout", 24: "timeout", -24: "timeout", 152: "timeout", 255: "timeout",
          None: "not checked"}


def run_mutmut(groups: list[str], max_children: int) -> float:
    """A fresh mutmut run over the groups; returns the seconds it took."""
    shutil.rmtree("mutants", ignore_errors=True)
    globs = [g for group in groups for g in GROUPS[group]]
    cmd = [str(Path(sys.executable).parent / "mutmut"), "run", "--max-children",
           str(max_children), *globs]
    start = time.monotonic()
    Path("mutants").mkdir()
    with open("mutants/run.log", "w") as log:  # mutmut's progress spinner: kept out of sight
        code = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT)
    if code:  # `debug = true` under [tool.mutmut] makes the log show which test failed
        sys.exit(f"mutmut run failed ({code}); see mutants/run.log")
    return time.monotonic() - start


def results() -> dict[str, str]:
    """{mutant name: status} from the .meta files of the last run."""
    out: dict[str, str] = {}
    for meta in Path("mutants").rglob("*.py.meta"):
        for name, code in json.loads(meta.read_text())["exit_code_by_key"].items():
            out[name] = STATUS.get(code, f"exit {code}")
    return out


def run_sql() -> float:
    """The SQL mutants (sql_mutants.py), their outcome kept beside mutmut's."""
    from tests.mutation_support import sql_mutants

    start = time.monotonic()
    total, survivors = sql_mutants.run()
    Path("mutants").mkdir(exist_ok=True)
    SQL_RESULTS.write_text(json.dumps({"total": total, "survivors": survivors}))
    return time.monotonic() - start


def sql_results() -> dict[str, str]:
    """{label: status} of the last SQL mutant run, in the shape of results()."""
    if not SQL_RESULTS.exists():
        return {}
    saved = json.loads(SQL_RESULTS.read_text())
    out = {f"killed #{i}": "killed" for i in range(saved["total"] - len(saved["survivors"]))}
    return out | {label: "survived" for label in saved["survivors"]}


def _row(group: str, statuses: dict[str, str]) -> None:
    count = Counter(statuses.values())
    total = len(statuses)
    score = 100.0 * count["killed"] / total if total else 0.0
    print(f"{group:26} {count['killed']:>5}/{total:<6} {score:5.1f}%  {count['survived']:>8}"
          f"  {count['no tests']:>8}  {count['timeout']:>7}")


def report(statuses: dict[str, str], groups: list[str], show: bool = False) -> int:
    """Print the table and the survivors (with their diffs if `show`); return how many
    mutants were not killed."""
    print(f"{'module':26} {'killed/total':>12} {'score':>6}  survived  no-tests  timeout")
    missed: list[tuple[str, str]] = []
    for group in groups:
        if group == SQL:
            mine = sql_results()
        else:
            mine = {n: st for n, st in statuses.items()
                    if any(fnmatch.fnmatchcase(n, g) for g in GROUPS[group])}
        _row(group, mine)
        missed += sorted((n, st) for n, st in mine.items() if st != "killed")
    for name, status in missed:
        print(f"  {status:9} {name}")
        if show and name.startswith("journalsync."):
            mutmut = str(Path(sys.executable).parent / "mutmut")
            diff = subprocess.run([mutmut, "show", name], capture_output=True, text=True).stdout
            print("".join(f"      {line}\n" for line in diff.splitlines()[1:]), end="")
    return len(missed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--report", action="store_true", help="report on the last run only")
    parser.add_argument("--show", action="store_true", help="print each survivor's diff")
    parser.add_argument("--max-children", type=int, default=2, help="parallel mutants (2 cores)")
    parser.add_argument("groups", nargs="*", choices=[[], *GROUPS, SQL], metavar="GROUP",
                        help=f"some of: {', '.join(GROUPS)}, {SQL} (default: all)")
    args = parser.parse_args()
    groups = args.groups or [*GROUPS, SQL]
    if not args.report:
        mutmut_groups = [g for g in groups if g != SQL]
        if mutmut_groups:
            print(f"mutmut: {run_mutmut(mutmut_groups, args.max_children):.0f} s")
        if SQL in groups:
            print(f"SQL mutants: {run_sql():.0f} s")
    report(results(), groups, args.show)


if __name__ == "__main__":
    main()
