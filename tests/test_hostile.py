"""The standing guard: scripts/hostile_suite.py (the bad-image corpus, odd file names, unreadable and
looping paths, bad arguments for every command, signals, attacks on a real server on loopback) must
find no crash and no lost output. Its table is printed (pytest -s shows it)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("psutil")
pytestmark = pytest.mark.slow  # about a minute and a half: real processes, signals, a Ray runtime, a server


def test_the_hostile_suite_finds_no_crash_and_loses_no_output() -> None:
    path = Path(__file__).resolve().parents[1] / "scripts" / "hostile_suite.py"
    spec = importlib.util.spec_from_file_location("hostile_suite", path)
    assert spec is not None and spec.loader is not None
    suite = importlib.util.module_from_spec(spec)
    sys.modules["hostile_suite"] = suite
    spec.loader.exec_module(suite)
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
