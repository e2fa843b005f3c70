"""The standing guard: scripts/hostile_suite.py (the bad-image corpus, odd file names, unreadable and
looping paths, bad arguments for every command, signals, attacks on a real server on loopback) must
find no crash and no lost output. Its table is printed (pytest -s shows it)."""

from __future__ import annotations

import pytest

from dfd_testkit.scripts import load_script

pytest.importorskip("fastapi")
pytest.importorskip("psutil")
pytestmark = pytest.mark.slow  # about a minute and a half: real processes, signals, a Ray runtime, a server


def test_the_hostile_suite_finds_no_crash_and_loses_no_output() -> None:
    suite = load_script("hostile_suite")
    rows = suite.run_suite()
    table = suite.format_table(rows)
    print(table)
    assert {r.category.split()[0] for r in rows} >= {
        "bad-image",
        "odd",
        "unreadable",
        "bad",
        "signals",
        "server",
    }
    assert all(r.tried > 0 for r in rows), table
    assert sum(r.crashes for r in rows) == 0, table
    assert sum(r.lost for r in rows) == 0, table
