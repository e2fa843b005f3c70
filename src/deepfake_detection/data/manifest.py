"""The crop manifest: one Parquet row per face crop, columns `types.MANIFEST_COLUMNS`.

pandas side: strings as pandas' string dtype, integers (phash included) int64, det_score float64,
box / landmarks / landmarks68 as object columns holding float32 NumPy arrays (None when absent).
Parquet side: list<float32> for those, zstd. Writes are atomic (temporary file in the target folder,
then os.replace), so a crash never leaves a half-written manifest where a reader expects one.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from deepfake_detection.data.types import MANIFEST_COLUMNS, CropRecord
from deepfake_detection.errors import DatasetError
from deepfake_detection.io.atomic import atomic_open

__all__ = ["MANIFEST_SCHEMA", "read_manifest", "records_to_frame", "write_manifest"]

_FLOATS = pa.list_(pa.float32())
_TYPES: dict[str, pa.DataType] = {
    "crop_path": pa.string(), "source_path": pa.string(), "source_id": pa.string(),
    "frame_index": pa.int64(), "face_index": pa.int64(), "box": _FLOATS, "landmarks": _FLOATS,
    "landmarks68": _FLOATS, "det_score": pa.float64(), "label": pa.int64(), "method": pa.string(),
    "dataset": pa.string(), "group": pa.string(), "split": pa.string(), "content_hash": pa.string(),
    "phash": pa.int64(), "crop_size": pa.int64(), "crop_protocol": pa.int64(),
    "crop_scale": pa.float64(), "crop_align": pa.bool_(), "crop_detector": pa.string(),
}
# Columns added after manifests were first written: filled with these when absent, so older manifests
# still read (their protocol is v1 with the default scale; the detector was not recorded).
_ADDED_COLUMNS: dict[str, object] = {"crop_scale": 1.3, "crop_align": False, "crop_detector": "unknown"}
MANIFEST_SCHEMA = pa.schema([(c, _TYPES[c]) for c in MANIFEST_COLUMNS])
_LIST_COLUMNS = ("box", "landmarks", "landmarks68")


def _float_array(v: object) -> np.ndarray | None:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return None
    return np.asarray(v, dtype=np.float32).ravel()


def records_to_frame(records: Iterable[CropRecord]) -> pd.DataFrame:
    """A DataFrame with exactly MANIFEST_COLUMNS, typed, in that order (empty input gives 0 rows)."""
    rows = [asdict(r) for r in records]
    data = {c: [row[c] for row in rows] for c in MANIFEST_COLUMNS}
    return _typed(pd.DataFrame(data, columns=list(MANIFEST_COLUMNS)))


def _typed(df: pd.DataFrame) -> pd.DataFrame:
    """Cast the manifest columns to their pandas dtypes (other columns untouched)."""
    out = df.copy()
    for c in MANIFEST_COLUMNS:
        t = _TYPES[c]
        if c in _LIST_COLUMNS:
            out[c] = pd.Series([_float_array(v) for v in out[c]], index=out.index, dtype=object)
        elif pa.types.is_string(t):
            out[c] = out[c].astype("str")
        elif pa.types.is_boolean(t):
            out[c] = out[c].astype(bool)
        elif pa.types.is_integer(t):
            out[c] = out[c].astype(np.int64)
        else:
            out[c] = out[c].astype(np.float64)
    return out


def _check_columns(columns: Sequence[str], where: str) -> None:
    missing = [c for c in MANIFEST_COLUMNS if c not in columns]
    if missing:
        raise DatasetError(f"{where}: manifest is missing column(s) {', '.join(missing)}")


def write_manifest(df: pd.DataFrame, path: Path | str) -> Path:
    """Write `df` (manifest columns first, extra columns kept after them) as Parquet, atomically."""
    path = Path(path)
    _check_columns(list(df.columns), str(path))
    extra = [c for c in df.columns if c not in MANIFEST_COLUMNS]
    typed = _typed(df)[list(MANIFEST_COLUMNS) + extra].reset_index(drop=True)
    try:
        table = pa.Table.from_pandas(typed, preserve_index=False)
        table = table.cast(pa.schema(list(MANIFEST_SCHEMA) + [table.schema.field(c) for c in extra]))
    except (pa.ArrowInvalid, pa.ArrowTypeError, ValueError) as e:
        raise DatasetError(f"{path}: cannot convert the manifest to Parquet ({e})") from None
    # fsync: the data is on disk before the rename makes it visible
    with atomic_open(path, "wb", fsync=True) as f:
        pq.write_table(table, f, compression="zstd")
    return path


def read_manifest(path: Path | str) -> pd.DataFrame:
    """Read a manifest, refusing one that lacks any of MANIFEST_COLUMNS (DatasetError naming them)."""
    path = Path(path)
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowInvalid) as e:
        raise DatasetError(f"{path}: cannot read manifest ({e})") from None
    for column, default in _ADDED_COLUMNS.items():
        if column not in table.column_names:
            table = table.append_column(column, pa.array([default] * table.num_rows, _TYPES[column]))
    _check_columns(table.column_names, str(path))
    return _typed(table.to_pandas())
