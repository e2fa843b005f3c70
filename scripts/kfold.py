"""Identity-disjoint k-fold manifests from one prepared manifest whose groups start with `fK-`.

`scripts/build_corpus_listing.py` gives every group its fold in the group name (`f0-ffpp00123`).
For fold k this writes `manifest_fold{k}.parquet` beside the manifest (the same crop files): test =
the groups of fold k, val = a seeded eighth of the other groups (by group, so identities never
straddle splits), train = the rest, minus train crops that near-duplicate a val/test crop (pHash).

    .venv/bin/python scripts/kfold.py work/corpus/manifest.parquet --folds 0 1 2 3 4

Leave-one-method-out on the same folds: `--leave-out-method NeuralTextures` also drops that method's
fakes from train and val (`manifest_fold{k}_no{Method}.parquet`); test keeps them, so the run's test
figures for that method are on a method it never saw, next to the fold's full run as the reference.
`--real-only` drops every fake (all methods, generated faces) from train and val
(`manifest_fold{k}_noFakes.parquet`): `METHOD=Fakes scripts/run_folds.sh` then trains on reals and
their self-blends alone (the SBI recipe), picks its epoch on validation reals and their fixed
self-blends, and every fake of the test split is of a kind it never saw.
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import pandas as pd

from deepfake_detection.data.dedup import remove_cross_split_duplicates
from deepfake_detection.data.manifest import read_manifest, write_manifest
from deepfake_detection.data.splits import check_no_leak

FOLD_PATTERN = r"^(?:[a-z]+:)?f(\d+)-"  # the layout may prefix the group (csv:f0-...)


def fold_manifest(df: pd.DataFrame, fold: int, *, val_share: int = 8) -> tuple[pd.DataFrame, int]:
    """`df` with splits for `fold` and the number of train rows dropped as near-duplicates."""
    groups = df["group"].astype(str)
    if not groups.str.match(FOLD_PATTERN).all():
        raise SystemExit("every group must start with its fold (fK-), as build_corpus_listing.py writes")
    folds = groups.str.extract(FOLD_PATTERN)[0].astype(int)
    in_val = groups.map(lambda g: int(hashlib.sha1(g.encode()).hexdigest(), 16) % val_share == 0)
    out = df.copy()
    out["split"] = "train"
    out.loc[in_val.to_numpy(), "split"] = "val"
    out.loc[(folds == fold).to_numpy(), "split"] = "test"
    kept, removed = remove_cross_split_duplicates(out, max_distance=4)
    check_no_leak(kept)
    return kept.reset_index(drop=True), len(removed)


def hold_out(df: pd.DataFrame, *, method: str | None = None, real_only: bool = False
             ) -> tuple[pd.DataFrame, str]:
    """A fold manifest without `method`'s fakes (or every fake) in train and val, and its file suffix;
    the test split keeps them all, so they are unseen there."""
    if method:
        if not (df["method"] == method).any():
            raise SystemExit(f"no crop has method {method!r}")
        unseen = (df["method"] == method) & (df["split"] != "test")
        return df[~unseen].reset_index(drop=True), f"_no{method}"
    if real_only:
        return df[(df["label"] == 0) | (df["split"] == "test")].reset_index(drop=True), "_noFakes"
    return df, ""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("manifest", type=Path)
    parser.add_argument("--folds", type=int, nargs="+", default=[0])
    leave_out = parser.add_mutually_exclusive_group()
    leave_out.add_argument("--leave-out-method", help="drop this method's fakes from train and val")
    leave_out.add_argument("--real-only", action="store_true", help="drop every fake from train and val")
    args = parser.parse_args()
    df = read_manifest(args.manifest)
    for fold in args.folds:
        out, dropped = fold_manifest(df, fold)
        out, suffix = hold_out(out, method=args.leave_out_method, real_only=args.real_only)
        name = f"manifest_fold{fold}{suffix}.parquet"
        target = write_manifest(out, args.manifest.with_name(name))
        counts = out.groupby(["split", "dataset", "label"]).size().unstack(fill_value=0)
        print(f"{target}: {len(out)} crops, {dropped} near-duplicates dropped from train\n{counts}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
