"""The default-model validation table: every figure the model issue asks for, with cluster-bootstrap
95% intervals over identity groups, next to its bar.

Input: `dfd evaluate` folders (product mode: scores.csv with per-frame clean and degraded scores,
videos.csv with `dfd detect`'s video verdicts, metrics.json), one per k-fold test split of the corpus
built by scripts/build_corpus_listing.py. Each figure is given twice: on the test frames of all
folders together (every frame scored by the fold model that never saw its identity group; the 95%
interval resamples the groups of every fold) and as the mean of the per-fold figures.
Leave-one-method-out: `--lomo-eval METHOD=DIR` per `run_folds.sh` METHOD=M evaluation.

    .venv/bin/python scripts/validation_report.py work/folds/eval_stage1_fold{0,1,2,3,4} \
        --lomo-eval NeuralTextures=work/folds/eval_stage1_fold0_noNeuralTextures --out work/validation.md

What a recipe change adds, on the same held-out frames: `--versus OTHER_EVAL` appends OTHER minus the
first folder, per measure, with a paired cluster-bootstrap interval (both models' scores of a frame
stay together when identity groups are resampled). `--lomo-versus METHOD BASE OTHER` (repeat per
method) does the same for leave-one-method-out runs: per method the held-out method's paired AUC
difference, and the difference of the mean over methods, paired over the shared test groups.
Replicates of one method on the same frames (training seeds) are named METHOD:LABEL, e.g.
`--lomo-versus FaceSwap:seed0 A0 B0 --lomo-versus FaceSwap:seed1 A1 B1`: the mean averages their
AUCs instead of pooling two models' scores.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from deepfake_detection.evaluate.metrics import expected_calibration_error, roc_auc

Stat = Callable[[pd.DataFrame], float]
FFPP_FRAMES = ("ffpp_crops", "ffpp_c23")  # c23 material; c40 is reported on its own
REAL_PHOTOS = ("aaf_real", "utk_real")
MIN_GROUPS = 5  # below this many identity groups no interval is reported
DEGRADATIONS = (("jpeg50", "JPEG 50"), ("blur1", "blur sigma 1"), ("down0.5", "downscale x0.5"),
                ("h264_crf40", "H.264 CRF 40"))  # the last: `dfd evaluate --robustness`, no bar of its own
BARRED_DEGRADATIONS = ("jpeg50", "blur1", "down0.5")  # issue 12's robustness bar (drop <= 0.05)


def cluster_bootstrap(df: pd.DataFrame, stat: Stat, by: str, n: int = 1000, seed: int = 0
                      ) -> tuple[float, float, float]:
    """(value, low, high): the statistic and its 95% percentile interval, resampling whole `by` groups
    (frames of one person are not independent). Resamples where the statistic is undefined are skipped.
    With fewer than MIN_GROUPS groups a percentile interval means nothing: (value, nan, nan)."""
    rng = np.random.default_rng(seed)
    df = df.reset_index(drop=True)
    members = list(df.groupby(by, sort=True).indices.values())
    try:
        value = stat(df)
    except ValueError:  # no data of this kind in this fold, or a single class
        return np.nan, np.nan, np.nan
    if len(members) < MIN_GROUPS:
        return value, np.nan, np.nan
    values = []
    for _ in range(n):
        picked = rng.integers(0, len(members), len(members))
        sample = df.take(np.concatenate([members[i] for i in picked]))
        try:
            v = stat(sample)
        except ValueError:  # a resample that lost a class
            continue
        if v is not None and np.isfinite(v):
            values.append(v)
    low, high = np.quantile(values, [0.025, 0.975]) if values else (np.nan, np.nan)
    return value, float(low), float(high)


def _auc(df: pd.DataFrame) -> float:
    return roc_auc(df["label"], df["score"])


def _ece(df: pd.DataFrame) -> float:
    return expected_calibration_error(df["score"], df["label"])[0]


def _rate(d: pd.DataFrame, column: str = "score") -> float:
    """Share of rows called fake, each at the threshold of the model that scored it (its fold's)."""
    return float((d[column] >= d["threshold"]).mean())


def _rate_under(name: str) -> Stat:
    return lambda d: _rate(d, f"score_{name}")


def _drop(name: str) -> Stat:
    return lambda d: roc_auc(d["label"], d["score"]) - roc_auc(d["label"], d[f"score_{name}"])


def _method_vs_reals(method: str) -> Stat:
    """AUC of one method's FF++ c23 fakes against every FF++ c23 real of the rows."""
    def stat(d: pd.DataFrame) -> float:
        d = d[d["dataset"].isin(FFPP_FRAMES) & ((d["label"] == 0) | (d["method"] == method))]
        return _auc(d)
    return stat


def load_folds(eval_dirs: list[Path]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every folder's test frames and video verdicts in one table each, with the folder's `fold` (its
    position), its model's `threshold`, and groups made unique per folder (a group is tested once)."""
    frames: list[pd.DataFrame] = []
    videos: list[pd.DataFrame] = []
    for fold, folder in enumerate(eval_dirs):
        threshold = float(json.loads((folder / "metrics.json").read_text())["threshold"])
        for table, name in ((frames, "scores.csv"), (videos, "videos.csv")):
            t = pd.read_csv(folder / name)
            table.append(t.assign(fold=fold, threshold=threshold, group=f"{fold}:" + t["group"].astype(str)))
    return pd.concat(frames, ignore_index=True), pd.concat(videos, ignore_index=True)


def measures(scores: pd.DataFrame, videos: pd.DataFrame) -> list[tuple[str, pd.DataFrame, Stat, str]]:
    """(measure, its rows, statistic, bar) for every figure of the issue's table."""
    ffpp = scores[scores["dataset"].isin(FFPP_FRAMES)]
    out: list[tuple[str, pd.DataFrame, Stat, str]] = [
        ("FF++ c23 held-out identities, frame AUC", ffpp, _auc, ">= 0.95"),
        ("FF++ c23 held-out identities, video AUC (dfd detect verdicts)",
         videos[videos["dataset"] == "ffpp_c23"], _auc, ">= 0.98"),
        ("FF++ c40 clips of held-out identities, frame AUC", scores[scores["dataset"] == "ffpp_c40"], _auc,
         ">= 0.85"),
        ("gan_faces held out, AUC", scores[scores["dataset"] == "gan_faces"], _auc, ">= 0.95"),
    ]
    for name in REAL_PHOTOS:
        out.append((f"{name} held-out reals, FPR at the threshold", scores[scores["dataset"] == name], _rate,
                    "<= 0.05"))
    ff_fakes = scores[scores["dataset"].str.startswith("ffpp") & (scores["label"] == 1)]
    out.append(("FF++ fakes (c23 + c40), recall at the threshold", ff_fakes, _rate, "reported"))
    if "score_jpeg50" in scores and scores["score_jpeg50"].notna().all():  # the operating point users meet
        photos = scores[scores["dataset"].isin(REAL_PHOTOS)]
        out.append(("FF++ fakes, recall at the threshold under JPEG 50", ff_fakes, _rate_under("jpeg50"),
                    "reported"))
        out.append(("real photos (aaf + utk), FPR at the threshold under JPEG 50", photos,
                    _rate_under("jpeg50"), "reported"))
    out.append(("ECE, all test frames", scores, _ece, "<= 0.05"))
    for name, label in DEGRADATIONS:
        if f"score_{name}" in scores and scores[f"score_{name}"].notna().all():
            out.append((f"AUC drop under {label}, all test frames", scores, _drop(name),
                        "<= 0.05" if name in BARRED_DEGRADATIONS else "reported"))
    for method in sorted(set(ffpp.loc[ffpp["label"] == 1, "method"])):
        out.append((f"FF++ {method} vs FF++ reals, frame AUC", ffpp, _method_vs_reals(method), "reported"))
    return out


def _shown(value: tuple[float, float, float] | float) -> str:
    if not isinstance(value, tuple):
        return f"{value:.3f}"
    if np.isnan(value[0]):
        return "n/a (no such test data)"
    if np.isnan(value[1]):
        return f"{value[0]:.3f} (no interval: fewer than {MIN_GROUPS} identity groups)"
    return f"{value[0]:.3f} [{value[1]:.3f}, {value[2]:.3f}]"


def _per_fold(rows: pd.DataFrame, stat: Stat, folds: int) -> str:
    values = []
    for fold in range(folds):
        try:
            values.append(stat(rows[rows["fold"] == fold]))
        except ValueError:  # this fold has no such test data
            values.append(np.nan)
    if np.isnan(values).all():
        return "n/a"
    shown = ", ".join("n/a" if np.isnan(v) else f"{v:.3f}" for v in values)
    return f"{np.nanmean(values):.3f} ({shown})"


Row = tuple[str, tuple[float, float, float] | float, str]  # measure, value or (value, low, high), bar


def lomo_rows(lomo_evals: Sequence[tuple[str, Path]]) -> list[Row]:
    """Leave-one-method-out from run_folds.sh METHOD=M evaluations: M's FF++ c23 fakes against the
    FF++ c23 reals of the test split, by a model that saw neither M nor those people. Several folds of
    one method are pooled."""
    by_method: dict[str, list[Path]] = {}
    for method, folder in lomo_evals:
        by_method.setdefault(method, []).append(folder)
    rows: list[Row] = []
    runs: list[pd.DataFrame] = []
    for method, folders in sorted(by_method.items()):
        scores, _ = load_folds(folders)
        runs.append(scores.assign(held_out=method))
        rows.append((f"LOMO: {method} never trained on, {len(folders)} fold(s), AUC",
                     cluster_bootstrap(scores, _method_vs_reals(method), "group"), "reported"))
    if runs:
        # The runs share test groups (same folds), so one resample of groups serves every method:
        # the interval of the mean keeps the methods' figures paired.
        mean = cluster_bootstrap(pd.concat(runs, ignore_index=True), _mean_lomo_auc, "group")
        rows.append((f"Leave-one-method-out, mean AUC over {len(runs)} method(s)", mean, ">= 0.85"))
    return rows


def _mean_lomo_auc(runs: pd.DataFrame) -> float:
    """Mean over held-out methods of each run's AUC on its own method (rows tagged `held_out`). Rows
    also tagged `replicate` (seeds scored on the same frames) are averaged per method, not pooled:
    two models' scores are on different scales."""
    def method_auc(method: str, d: pd.DataFrame) -> float:
        replicates = d.groupby("replicate") if "replicate" in d else [("", d)]
        return float(np.mean([_method_vs_reals(method)(r) for _, r in replicates]))
    return float(np.mean([method_auc(str(m), d) for m, d in runs.groupby("held_out")]))


def report(eval_dirs: list[Path], lomo_evals: Sequence[tuple[str, Path]] = ()) -> str:
    """The table of bars. Several folders (one per k-fold test split): every frame is scored by the
    fold model that never saw its identity group, so the pooled frames of all folds are one held-out
    set over all groups (intervals resample groups of every fold); the per-fold mean is beside it."""
    scores, videos = load_folds(eval_dirs)
    folds = len(eval_dirs)
    thresholds = ", ".join(f"{t:.3f}" for t in scores.groupby("fold")["threshold"].first())
    lines = [f"95% intervals: cluster bootstrap over identity groups, 1000 resamples. {len(scores)} test "
             f"frames and {len(videos)} video verdicts from {folds} test split(s), each scored by the model "
             f"of its fold at that model's threshold ({thresholds}).", "",
             "| measure | value [95% CI], all folds' test frames | mean over folds (per fold) | bar |",
             "| --- | --- | --- | --- |"]
    for name, rows, stat, bar in measures(scores, videos):
        value = cluster_bootstrap(rows, stat, "group")
        lines.append(f"| {name} | {_shown(value)} | {_per_fold(rows, stat, folds)} | {bar} |")
    lines += [f"| {name} | {_shown(value)} | | {bar} |" for name, value, bar in lomo_rows(lomo_evals)]
    return "\n".join(lines) + "\n"


def _of_other(stat: Stat) -> Stat:
    """`stat` on the other model's columns of a merged frame (`score_other` -> `score`, ...)."""
    return lambda d: stat(d.assign(**{c.removesuffix("_other"): d[c] for c in d.columns
                                      if c.endswith("_other")}))


def _paired(base: Path, other: Path) -> pd.DataFrame:
    """Both evaluations' scores of each frame in one row (the other's columns end in `_other`)."""
    key = ["source_id", "frame_index"]
    a, b = pd.read_csv(base / "scores.csv"), pd.read_csv(other / "scores.csv")
    both = a.merge(b.drop(columns=["dataset", "group", "label", "method"], errors="ignore"), on=key,
                   suffixes=("", "_other"))
    if len(both) < 0.95 * max(len(a), len(b)):
        raise SystemExit(f"{base} and {other} share {len(both)} of {len(a)}/{len(b)} frames: "
                         "not one test split")
    return both


def _difference(stat: Stat) -> Stat:
    return lambda d: _of_other(stat)(d) - stat(d)


def _shown_difference(value: tuple[float, float, float]) -> str:
    diff, low, high = value
    return f"{diff:+.3f}" + ("" if np.isnan(low) else f" [{low:+.3f}, {high:+.3f}]")


def compare(base: Path, other: Path) -> str:
    both = _paired(base, other)
    parts: dict[str, tuple[tuple[str, ...] | None, Stat]] = {
        "FF++ c23 frame AUC": (FFPP_FRAMES, _auc), "FF++ c40 frame AUC": (("ffpp_c40",), _auc),
        "gan_faces AUC": (("gan_faces",), _auc), "ECE, all test frames": (None, _ece)}
    for name, label in DEGRADATIONS:
        if f"score_{name}" in both and f"score_{name}_other" in both:  # both models were degraded
            parts[f"AUC drop under {label}"] = (None, _drop(name))
    ffpp_fakes = both[both["dataset"].isin(FFPP_FRAMES) & (both["label"] == 1)]
    for method in sorted(ffpp_fakes["method"].dropna().unique()):  # a method one model never saw: LOMO
        parts[f"FF++ {method} vs FF++ reals"] = (FFPP_FRAMES, _method_vs_reals(method))
    lines = [f"`{other.name}` against `{base.name}` on the same {len(both)} test frames (paired cluster "
             "bootstrap over identity groups, 1000 resamples):", "",
             f"| measure | {base.name} | {other.name} | difference [95% CI] |", "| --- | --- | --- | --- |"]
    for measure, (datasets, stat) in parts.items():
        rows = both if datasets is None else both[both["dataset"].isin(datasets)]
        if rows.empty:
            continue
        difference = _shown_difference(cluster_bootstrap(rows, _difference(stat), "group"))
        lines.append(f"| {measure} | {stat(rows):.3f} | {_of_other(stat)(rows):.3f} | {difference} |")
    return "\n".join(lines) + "\n"


def lomo_compare(pairs: Sequence[tuple[str, Path, Path]]) -> str:
    """A recipe change measured by leave-one-method-out: per (METHOD, BASE, OTHER), both models never
    saw METHOD; its paired AUC difference, then the difference of the mean over the methods, with one
    resample of the shared test groups serving every method (as lomo_rows does; pairs of one method
    from several folds are pooled in the mean, replicates METHOD:LABEL averaged)."""
    named = [(label, *label.partition(":")[::2]) for label, _, _ in pairs]  # (label, method, replicate)
    runs = [_paired(base, other).assign(held_out=method, replicate=replicate)
            for (_, method, replicate), (_, base, other) in zip(named, pairs, strict=True)]
    runs = [run[run["dataset"].isin(FFPP_FRAMES)] for run in runs]
    lines = ["Leave-one-method-out, OTHER against BASE (paired cluster bootstrap over identity groups, "
             "1000 resamples):", "", "| method never trained on | BASE | OTHER | difference [95% CI] |",
             "| --- | --- | --- | --- |"]
    for (label, method, _), (_, base, other), run in zip(named, pairs, runs, strict=True):
        stat = _method_vs_reals(method)
        difference = _shown_difference(cluster_bootstrap(run, _difference(stat), "group"))
        lines.append(f"| {label} (`{base.name}` / `{other.name}`) | {stat(run):.3f} | "
                     f"{_of_other(stat)(run):.3f} | {difference} |")
    pooled = pd.concat(runs, ignore_index=True)
    mean = _shown_difference(cluster_bootstrap(pooled, _difference(_mean_lomo_auc), "group"))
    methods = len({method for _, method, _ in named})
    lines.append(f"| mean over {methods} method(s) | {_mean_lomo_auc(pooled):.3f} | "
                 f"{_of_other(_mean_lomo_auc)(pooled):.3f} | {mean} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("eval_dirs", type=Path, nargs="+", help="`dfd evaluate` output folders, fold 0 first")
    parser.add_argument("--lomo-eval", action="append", default=[], metavar="METHOD=DIR",
                        help="a run_folds.sh METHOD=M evaluation folder (repeat per method and fold)")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--versus", type=Path, help="another model's evaluation of the first folder's split")
    parser.add_argument("--lomo-versus", action="append", nargs=3, default=[], type=Path,
                        metavar=("METHOD", "BASE", "OTHER"),
                        help="two leave-one-method-out evaluations without METHOD (repeat per method; "
                             "METHOD:LABEL for replicates such as seeds)")
    args = parser.parse_args()
    lomo_evals = []
    for item in args.lomo_eval:
        method, sep, folder = item.partition("=")
        if not sep or not method:
            parser.error(f"--lomo-eval wants METHOD=DIR, got {item!r}")
        lomo_evals.append((method, Path(folder)))
    text = report(args.eval_dirs, lomo_evals)
    if args.versus:
        text += "\n" + compare(args.eval_dirs[0], args.versus)
    if args.lomo_versus:
        text += "\n" + lomo_compare([(str(m), base, other) for m, base, other in args.lomo_versus])
    if args.out:
        args.out.write_text(text)
    print(text, end="" if text.endswith("\n") else "\n")  # no trailing blank line
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
