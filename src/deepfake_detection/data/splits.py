"""Group-aware train / val / test splits: a whole identity group always lands in one split.

Decisions:
* Official splits: read from an `official_split` column when the frame has one, else from `split`
  (the runner stores SourceItem.official_split there). With use_official, every group whose rows carry
  an official split is fixed to it; should a group's rows disagree (Celeb-DF's test list shares
  celebrities with training), the group goes to the strictest of them, test > val > train, so no
  identity leaks. Groups without one are assigned by the greedy rule below, among themselves.
* Greedy rule: groups in a seeded random order, then stably by size (largest first); each goes to the
  split that most reduces the squared relative gap between the crop counts per (split, label) and their
  targets (ratio x label total). Big groups are placed while there is room, small ones fill the gaps,
  and each split gets both labels when the groups allow it. Deterministic for a seed.
* Leave-one-method-out: every group holding a crop of the held-out method goes to test (with its reals
  and any other methods in it); the remaining free groups are split between train and val only (in
  the ratio of ratios[0] to ratios[1]), so test measures exactly the unseen method's groups.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from deepfake_detection.errors import DatasetError

__all__ = ["SPLITS", "assign_splits", "check_no_leak"]

SPLITS = ("train", "val", "test")
_STRICTNESS = {s: i for i, s in enumerate(SPLITS)}


def _official(df: pd.DataFrame) -> pd.Series | None:
    col = "official_split" if "official_split" in df.columns else "split" if "split" in df.columns else None
    if col is None:
        return None
    values = df[col].astype(object).where(df[col].isin(SPLITS), None)
    return values if values.notna().any() else None


def _greedy(names: np.ndarray, values: np.ndarray, ratios: np.ndarray, seed: int) -> np.ndarray:
    """Split index (into SPLITS) per group, balancing each stratum's crop counts toward `ratios`.

    `names`: group names; `values`: (groups, strata) crop counts. Groups go largest first, ties in a
    seeded order of the sorted names. Arrays, not dicts or pandas tables: 200,000 one-image groups
    must not cost hundreds of megabytes.
    """
    out = np.zeros(len(names), dtype=np.int8)
    if len(names) == 0:
        return out
    rng = np.random.default_rng(seed)
    seeded = np.argsort(names, kind="stable")[rng.permutation(len(names))]
    order = seeded[np.argsort(-values[seeded].sum(axis=1), kind="stable")]
    targets = np.outer(ratios, values.sum(axis=0))  # (split, stratum)
    # Plain Python floats in the loop: NumPy's per-call overhead would dominate for tiny groups.
    tgt = targets.tolist()
    scale = (1.0 / np.maximum(targets, 1.0) ** 2).tolist()
    filled = [[0.0] * targets.shape[1] for _ in SPLITS]
    open_splits = [s for s in range(len(SPLITS)) if ratios[s] > 0]
    for i in order.tolist():
        g = values[i].tolist()
        best, best_cost = open_splits[0], float("inf")
        for s in open_splits:
            # Change of sum(((filled - target) / target)^2) if g is added to split s.
            terms = zip(filled[s], tgt[s], g, scale[s], strict=True)
            cost = sum((2 * (f - t) + x) * x * c for f, t, x, c in terms)
            if cost < best_cost:
                best, best_cost = s, cost
        filled[best] = [f + x for f, x in zip(filled[best], g, strict=True)]
        out[i] = best
    return out


def assign_splits(
    df: pd.DataFrame,
    *,
    ratios: tuple[float, float, float] = (0.8, 0.1, 0.1),
    seed: int = 0,
    use_official: bool = True,
    leave_out_method: str | None = None,
) -> pd.DataFrame:
    """A copy of `df` with its `split` column set to train / val / test (see the module docstring)."""
    for col in ("group", "label") + (("method",) if leave_out_method else ()):
        if col not in df.columns:
            raise DatasetError(f"cannot split: column {col!r} is missing")
    r = np.asarray(ratios, dtype=np.float64)
    if r.shape != (3,) or (r < 0).any() or r.sum() <= 0:
        raise ValueError(f"ratios must be three non-negative numbers with a positive sum, got {ratios}")
    groups = df["group"].astype(str)
    fixed: dict[str, str] = {}
    if leave_out_method is not None:
        held = groups[(df["method"] == leave_out_method).to_numpy()].unique()
        if len(held) == 0:
            raise DatasetError(f"leave_out_method {leave_out_method!r}: no crop has that method")
        fixed.update({g: "test" for g in held})
        r = np.array([r[0], r[1], 0.0]) if r[0] + r[1] > 0 else np.array([1.0, 0.0, 0.0])
    official = _official(df) if use_official else None
    if official is not None:
        ranked = official.dropna().map(_STRICTNESS).groupby(groups[official.notna()]).max()
        for g, rank in ranked.items():
            fixed.setdefault(str(g), SPLITS[int(rank)])
    # Balance every (dataset, method, label) stratum toward the ratios, not just the labels: else a
    # small source (say, 150 GAN fakes) can land wholly in train while another fills val/test.
    strata = df["label"].astype(np.int64).astype(str)
    for col in ("method", "dataset"):
        if col in df.columns:
            strata = df[col].astype(str) + "|" + strata
    group_codes, group_names = pd.factorize(groups)
    strata_codes, strata_names = pd.factorize(strata)
    counts = np.zeros((len(group_names), len(strata_names)), dtype=np.float64)
    np.add.at(counts, (group_codes, strata_codes), 1.0)
    free = ~np.isin(group_names, list(fixed))
    split_index = np.zeros(len(group_names), dtype=np.int8)
    split_index[free] = _greedy(np.asarray(group_names[free], dtype=str), counts[free], r / r.sum(), seed)
    for i in np.flatnonzero(~free):
        split_index[i] = SPLITS.index(fixed[str(group_names[i])])
    out = df.copy()
    out["split"] = np.asarray(SPLITS, dtype=object)[split_index[group_codes]]
    out["split"] = out["split"].astype("str")
    return out


def check_no_leak(df: pd.DataFrame) -> None:
    """Raise DatasetError when an identity group appears in more than one split."""
    per_group = df.groupby(df["group"].astype(str))["split"].nunique()
    leaked = sorted(per_group[per_group > 1].index)
    if leaked:
        shown = ", ".join(leaked[:10]) + (f" and {len(leaked) - 10} more" if len(leaked) > 10 else "")
        raise DatasetError(f"{len(leaked)} identity group(s) appear in more than one split: {shown}")
