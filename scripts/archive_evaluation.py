"""Keep a `dfd evaluate` result in the repository without any file of the corpus named in it.

`work/`, where fold runs and their evaluations live, is never committed, so a new session loses
them and cannot pool folds it did not run itself. This writes what scripts/validation_report.py reads
(metrics.json, scores.csv, videos.csv) to OUT with every source path dropped, every source id replaced
by a SHA-256 prefix (ids stay joinable across archives of the same split, for `--versus`) and every
identity-group id by its rank among the evaluation's groups (same sort order, so the cluster bootstrap
draws the same resamples and the report is unchanged). File names of the corpus, which DATA.md keeps
out of the repository, do not appear (a photo that is its own identity group is named after its file).
Scores, labels, methods and datasets are kept: numbers a model produced, not data.

    .venv/bin/python scripts/archive_evaluation.py work/folds/eval_stage1_fold3 \
        models/evaluations/stage1_fold3
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import pandas as pd

from deepfake_detection.io.atomic import write_text_atomic

TABLES = ("scores.csv", "videos.csv")


def hashed_source_id(source_id: object) -> str:
    """The id an archive keeps for a source: a SHA-256 prefix, joinable across archives of one split."""
    return hashlib.sha256(str(source_id).encode()).hexdigest()[:16]


def archive(evaluation: Path, out: Path) -> Path:
    """Write the stripped copy of `evaluation` to `out` (created; its three files replaced)."""
    metrics = json.loads((evaluation / "metrics.json").read_text())
    data = metrics.get("data") or {}
    if "product path" not in str(data.get("mode", "")):
        raise SystemExit(f"{evaluation}: not a product-path evaluation (dfd evaluate --mode product)")
    data["unreadable_sources"] = len(data.get("unreadable_sources") or [])  # paths: counted, not named
    out.mkdir(parents=True, exist_ok=True)
    tables = {name: pd.read_csv(evaluation / name).drop(columns=["source_path"], errors="ignore")
              for name in TABLES}
    groups = sorted({str(g) for t in tables.values() if "group" in t.columns for g in t["group"]})
    rank = {group: f"g{i:06d}" for i, group in enumerate(groups)}
    for name, table in tables.items():
        if "source_id" in table.columns:
            table["source_id"] = table["source_id"].map(hashed_source_id)
        if "group" in table.columns:
            table["group"] = table["group"].astype(str).map(rank)
        write_text_atomic(out / name, table.to_csv(index=False))
    write_text_atomic(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("evaluation", type=Path, help="a `dfd evaluate --out` folder (product mode)")
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    print(archive(args.evaluation, args.out))


if __name__ == "__main__":
    main()
