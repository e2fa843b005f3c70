"""The Parquet rows of `dfd scan`: `ImageResult.to_dict()` (the JSONL of `dfd detect`) plus `id`.

Nested fields stay nested (faces: a list of structs, model and timings_ms: structs) rather than JSON
strings: pandas reads them as lists of dicts, Arrow engines (DuckDB, Spark, pyarrow.compute) can filter
on `faces.fake_probability` directly, and the types are checked when written. timings_ms is a struct
with a fixed set of keys: a stage an image never reached is null (a JSONL record omits it).
`id` is the input's position in the listing: rows are written as batches finish, not in input order.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from deepfake_detection.infer.results import ImageResult
from deepfake_detection.io.paths import display_path, path_bytes
from deepfake_detection.io.sources import InputItem

TIMING_KEYS = ("decode", "detect", "crop", "classify", "total")
MODEL_KEYS = ("name", "arch", "sha256", "backend")

FACE_TYPE = pa.struct([
    ("box", pa.list_(pa.float64())),
    ("detector_score", pa.float64()),
    ("fake_probability", pa.float64()),
    ("landmarks", pa.list_(pa.list_(pa.float64()))),
    ("sharpness", pa.float64()),
    ("blurry", pa.bool_()),
])
RESULT_SCHEMA = pa.schema([
    ("id", pa.int64()),
    ("path", pa.string()),  # a name that is not UTF-8 shows its odd bytes as \xNN here ...
    ("path_bytes", pa.binary()),  # ... and holds them exactly here (null for every other name)
    ("status", pa.string()),
    ("fake_probability", pa.float64()),
    ("label", pa.string()),
    ("threshold", pa.float64()),
    ("faces", pa.list_(FACE_TYPE)),
    ("error", pa.string()),
    ("model", pa.struct([(k, pa.string()) for k in MODEL_KEYS])),
    ("image_size", pa.list_(pa.int64())),
    ("timings_ms", pa.struct([(k, pa.float64()) for k in TIMING_KEYS])),
    ("warnings", pa.list_(pa.string())),
])


INPUT_SCHEMA = pa.schema([("id", pa.int64()), ("path", pa.binary()), ("missing", pa.bool_()),
                          ("error", pa.string())])


def input_table(items: Sequence[InputItem]) -> pa.Table:
    """The scan's inputs; paths travel as their bytes, so names that are not UTF-8 arrive intact."""
    return pa.table({"id": pa.array(range(len(items)), pa.int64()),
                     "path": pa.array([os.fsencode(i.path) for i in items], pa.binary()),
                     "missing": pa.array([i.missing for i in items], pa.bool_()),
                     "error": pa.array([display_path(i.error) if i.error else None for i in items],
                                       pa.string())}, schema=INPUT_SCHEMA)


def input_item(row: dict[str, Any]) -> InputItem:
    return InputItem(os.fsdecode(row["path"]), bool(row["missing"]), row.get("error"))


def _row(item_id: int, result: ImageResult) -> dict[str, Any]:
    data = {"id": int(item_id), **result.to_dict()}
    path = data["path"]
    data["path_bytes"] = None if path is None else path_bytes(path)
    if path is not None:
        data["path"] = display_path(path)
    if data["error"]:
        data["error"] = display_path(data["error"])
    return data


def results_table(ids: Sequence[int], results: Sequence[ImageResult]) -> pa.Table:
    rows = [_row(i, r) for i, r in zip(ids, results, strict=True)]
    return pa.Table.from_pylist(rows, schema=RESULT_SCHEMA)


def read_results(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """A scan's rows as `dfd detect` JSONL records (with `id`), in input order."""
    import pyarrow.parquet as pq

    rows = pq.read_table(path).sort_by("id").to_pylist()
    for row in rows:
        row["timings_ms"] = {k: v for k, v in row["timings_ms"].items() if v is not None}
        raw = row.pop("path_bytes", None)
        if raw is not None:  # the name as the file system has it (surrogate escapes, as os.listdir)
            row["path"] = os.fsdecode(raw)
    return rows
