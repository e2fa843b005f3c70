"""Developer tooling: the pre-commit configuration is valid, and scripts/install.sh does not reinstall
an environment that is already up to date (scripts/test.sh runs it first every time)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_pre_commit_config_is_valid() -> None:
    done = subprocess.run([sys.executable, "-m", "pre_commit", "validate-config", ".pre-commit-config.yaml"],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    config = (REPO / ".pre-commit-config.yaml").read_text()
    assert "ruff check" in config and "mypy" in config


def test_install_skips_pip_when_nothing_changed() -> None:
    venv = Path(sys.prefix)
    stamp = venv / ".dfd-install-stamp"
    wanted = hashlib.sha256((REPO / "pyproject.toml").read_bytes()
                            + (REPO / "scripts" / "install.sh").read_bytes()).hexdigest()
    if venv != REPO / ".venv" or not stamp.exists() or stamp.read_text().strip() != wanted:
        pytest.skip("this environment was not made by scripts/install.sh from the current files")
    # With no package index pip cannot even build the editable install: success means pip never ran.
    env = {**os.environ, "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": ""}
    done = subprocess.run(["scripts/install.sh"], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0 and "installed: dfd" in done.stdout, done.stderr[-2000:]
