"""Screen a logit ensemble on stored product-path scores, without running any model.

    .venv/bin/python scripts/ensemble_scores.py models/evaluations/A models/evaluations/B --out work/ens/ab
    .venv/bin/python scripts/validation_report.py models/evaluations/A --versus work/ens/ab

Each member's `dfd evaluate` folder (product mode, the same test split) gives calibrated
probabilities per frame and per video; the screen averages their logits with equal weights and writes
a folder `validation_report.py` reads. A real ensemble (`ensemble_models.py`, then `dfd calibrate`)
averages raw logits and refits Platt, so the screen weighs members by their Platt slopes instead: it
ranks as a real one nearly does, but its threshold is not fitted. Read its AUCs, not its rates.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

from deepfake_detection.evaluate.calibration import sigmoid
from deepfake_detection.evaluate.product_path import raw_logits
from deepfake_detection.io.atomic import write_text_atomic

KEYS = {"scores.csv": ["source_id", "frame_index"], "videos.csv": ["source_id"]}


def mean_logit(tables: list[pd.DataFrame], keys: list[str]) -> pd.DataFrame:
    """The first table with every `score*` column replaced by the members' mean logit, as a probability.

    Rows are matched on `keys`; tables of different splits are refused rather than silently joined."""
    first = tables[0].set_index(keys)
    if first.index.has_duplicates:
        raise ValueError(f"duplicate rows for {keys} in the first member")
    columns = [c for c in first.columns if c.startswith("score")]
    total = pd.DataFrame(0.0, index=first.index, columns=columns)
    for table in tables:
        t = table.set_index(keys)
        if len(t) != len(first) or not t.index.sort_values().equals(first.index.sort_values()):
            raise ValueError("members were evaluated on different rows: not the same test split")
        total += raw_logits(t.loc[first.index, columns].to_numpy(), temperature=1.0)  # plain logits
    out = first.copy()
    out[columns] = sigmoid(total.to_numpy() / len(tables))
    return out.reset_index()[tables[0].columns]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("members", nargs="+", type=Path, help="`dfd evaluate` folders of one test split")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if len(args.members) < 2:
        parser.error("an ensemble needs at least two members")
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        for name, keys in KEYS.items():
            tables = [pd.read_csv(folder / name) for folder in args.members]
            text = mean_logit(tables, keys).to_csv(index=False)
            write_text_atomic(args.out / name, text)
    except (OSError, ValueError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    # No threshold is fitted on a screen: 0.5 keeps the report's rate rows readable, not meaningful.
    record = {"threshold": 0.5, "screen": "score-level logit mean", "members": [str(m) for m in args.members]}
    write_text_atomic(args.out / "metrics.json", json.dumps(record, indent=2) + "\n")
    print(f"{args.out}: logit mean of {len(args.members)} members' stored scores")
    return 0


if __name__ == "__main__":
    sys.exit(main())
