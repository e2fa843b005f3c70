"""Output formats of `dfd detect`: table, JSONL, JSON, CSV. Files are written atomically.

Paths that are not valid UTF-8, control characters and spreadsheet formulas are written by the rules
of io/paths.py: nothing is lost and nothing is injected into a terminal or a spreadsheet."""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO

from deepfake_detection.infer.results import ImageResult
from deepfake_detection.io.atomic import atomic_open
from deepfake_detection.io.paths import csv_cell, is_stdout, json_safe, terminal_text

FORMATS = ("table", "jsonl", "json", "csv")
CSV_FIELDS = ["path", "status", "fake_probability", "label", "threshold", "num_faces", "faces", "error",
              "model", "model_sha256", "total_ms", "warnings"]


@contextmanager
def open_output(path: str | None) -> Iterator[TextIO]:
    """stdout (None or `-`), or a temporary file renamed over `path` only when everything was written.
    Undecodable bytes of file names are written as they are (only CSV leaves any: see io/paths.py)."""
    if path is None or is_stdout(path):
        stdout = sys.stdout
        previous = getattr(stdout, "errors", None)
        if previous is not None and hasattr(stdout, "reconfigure"):
            stdout.reconfigure(errors="surrogateescape")
        try:
            yield stdout
        finally:
            stdout.flush()
            if previous is not None and hasattr(stdout, "reconfigure"):
                stdout.reconfigure(errors=previous)
        return
    with atomic_open(path, "w", newline="") as handle:
        handle.reconfigure(errors="surrogateescape")  # type: ignore[attr-defined]
        yield handle


class ResultWriter:
    """Streams results in one format; `close()` finishes formats that need an ending."""

    def __init__(self, stream: TextIO, fmt: str) -> None:
        if fmt not in FORMATS:
            raise ValueError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")
        self.stream, self.fmt = stream, fmt
        self._json_items: list[dict[str, Any]] = []
        self._csv: Any = None
        if fmt == "csv":
            self._csv = csv.DictWriter(stream, fieldnames=CSV_FIELDS)
            self._csv.writeheader()
        elif fmt == "table":
            stream.write(f"{'status':<8} {'label':<5} {'p(fake)':>7} {'faces':>5}  path\n")

    def write(self, result: ImageResult) -> None:
        data = result.to_dict()
        if self.fmt == "jsonl":
            self.stream.write(json_safe(json.dumps(data, ensure_ascii=False)) + "\n")
        elif self.fmt == "json":
            self._json_items.append(data)
        elif self.fmt == "csv":
            row = {
                "path": data["path"], "status": data["status"], "fake_probability": data["fake_probability"],
                "label": data["label"], "threshold": data["threshold"], "num_faces": len(data["faces"]),
                "faces": json.dumps(data["faces"]), "error": data["error"], "model": data["model"]["name"],
                "model_sha256": data["model"]["sha256"], "total_ms": data["timings_ms"].get("total"),
                "warnings": "; ".join(data["warnings"]) or None,
            }
            self._csv.writerow({key: csv_cell(value) for key, value in row.items()})
        else:
            prob = "" if result.fake_probability is None else f"{result.fake_probability:.3f}"
            detail = f"  ({result.error})" if result.error else ""
            detail += "".join(f"  [{w}]" for w in result.warnings)
            label = result.label or "-"
            line = (f"{result.status:<8} {label:<5} {prob:>7} {len(result.faces):>5}  "
                    f"{terminal_text(result.path or '')}{terminal_text(detail)}")
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.fmt == "json":
            self.stream.write(json_safe(json.dumps(self._json_items, ensure_ascii=False, indent=2)))
            self.stream.write("\n")
