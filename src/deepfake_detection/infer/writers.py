"""Output formats of `dfd detect`: table, JSONL, JSON, CSV. Files are written atomically."""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO

from deepfake_detection.infer.results import ImageResult
from deepfake_detection.io.atomic import atomic_open

FORMATS = ("table", "jsonl", "json", "csv")
CSV_FIELDS = ["path", "status", "fake_probability", "label", "threshold", "num_faces", "faces", "error",
              "model", "model_sha256", "total_ms"]


@contextmanager
def open_output(path: str | None) -> Iterator[TextIO]:
    """stdout, or a temporary file renamed over `path` only when everything was written."""
    if path is None:
        yield sys.stdout
        return
    with atomic_open(path, "w", newline="") as handle:
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
            self.stream.write(json.dumps(data, ensure_ascii=False) + "\n")
        elif self.fmt == "json":
            self._json_items.append(data)
        elif self.fmt == "csv":
            self._csv.writerow({
                "path": data["path"], "status": data["status"], "fake_probability": data["fake_probability"],
                "label": data["label"], "threshold": data["threshold"], "num_faces": len(data["faces"]),
                "faces": json.dumps(data["faces"]), "error": data["error"], "model": data["model"]["name"],
                "model_sha256": data["model"]["sha256"], "total_ms": data["timings_ms"].get("total"),
            })
        else:
            prob = "" if result.fake_probability is None else f"{result.fake_probability:.3f}"
            detail = f"  ({result.error})" if result.error else ""
            label = result.label or "-"
            row = f"{result.status:<8} {label:<5} {prob:>7} {len(result.faces):>5}  {result.path}{detail}"
            self.stream.write(row + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.fmt == "json":
            json.dump(self._json_items, self.stream, ensure_ascii=False, indent=2)
            self.stream.write("\n")
