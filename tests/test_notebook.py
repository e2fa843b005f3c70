"""CI executes the notebook on a tiny generated dataset so it never rots."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_notebook_runs(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("DFD_NOTEBOOK_WORK", str(tmp_path))
    monkeypatch.delenv("DFD_NOTEBOOK_DATA", raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the tiny training is faster on one thread
    notebook = nbformat.read(ROOT / "notebooks" / "EDA_and_Model_Training.ipynb", as_version=4)
    NotebookClient(notebook, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(ROOT)}}).execute()
    outputs = "".join(str(o.get("text", "")) for cell in notebook.cells for o in cell.get("outputs", []))
    assert "frame AUC" in outputs and "crops" in outputs
    assert (tmp_path / "run" / "model.onnx").exists() and (tmp_path / "eval" / "report.html").exists()
    images = sum("image/png" in o.get("data", {}) for c in notebook.cells for o in c.get("outputs", []))
    assert images >= 5, "expected plots in the executed notebook"
    assert os.path.getsize(tmp_path / "augment_preview.png") > 10_000
