"""`dfd scan`: batch detection over millions of images on Ray Data (an optional extra).

    inputs.py   sources (folders, globs, CSV/Parquet listings, object-store URIs) -> inputs; reading URIs
    stages.py   the two Ray stages: decode+detect+crop tasks, and classifier actors (model loaded once)
    schema.py   the Parquet result schema: the fields of `dfd detect`'s JSONL, nested
    pipeline.py the Ray Data plan, the atomic Parquet writer, progress and the summary

The per-image work is the Predictor's own (`Predictor.prepare`, `Predictor.finish`), so a scan gives the
same results as `dfd detect` on the same files and model.
"""

from __future__ import annotations

from deepfake_detection.scan.pipeline import ScanConfig, ScanSummary, scan

__all__ = ["ScanConfig", "ScanSummary", "scan"]
