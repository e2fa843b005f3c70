"""The model-validation scripts: k-fold manifests, the fold runner's skip/resume logic and the table
of bars (scripts/kfold.py, scripts/run_folds.sh, scripts/default_recipe.sh, scripts/validation_report.py,
scripts/archive_evaluation.py, scripts/jpeg_drop_by_source.py, scripts/evaluate_stored_crops.py,
scripts/ensemble_scores.py, scripts/sharpness_report.py)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dfd_testkit.scripts import load_script

REPO = Path(__file__).resolve().parents[1]


def _fold_frame(n_groups: int = 40) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for g in range(n_groups):
        for k in range(3):
            label = int(k > 0)
            rows.append({"group": f"csv:f{g % 5}-g{g}", "label": label,
                         "method": "B" if label and g % 2 else ("A" if label else "real"),
                         "split": "train", "phash": int(rng.integers(0, 2**62)),
                         "crop_path": f"c/{g}_{k}.jpg"})
    return pd.DataFrame(rows)


def test_kfold_test_split_is_exactly_the_fold_and_groups_never_straddle() -> None:
    kfold = load_script("kfold")
    df = _fold_frame()
    for fold in range(5):
        out, dropped = kfold.fold_manifest(df, fold)
        assert dropped == 0 and len(out) == len(df)
        test_groups = set(out.loc[out["split"] == "test", "group"])
        assert test_groups == {g for g in df["group"] if g.startswith(f"csv:f{fold}-")}
        assert out.groupby("group")["split"].nunique().max() == 1
        assert {"train", "val"} <= set(out["split"])
    with pytest.raises(SystemExit, match="fK-"):
        kfold.fold_manifest(df.assign(group="no-fold"), 0)


def test_kfold_holds_out_one_method_or_every_fake_from_train_and_val_only() -> None:
    kfold = load_script("kfold")
    out, _ = kfold.fold_manifest(_fold_frame(), 0)
    test = out[out["split"] == "test"]
    no_b, suffix = kfold.hold_out(out, method="B")
    assert suffix == "_noB"
    assert not ((no_b["method"] == "B") & (no_b["split"] != "test")).any()
    assert (no_b["method"] == "A").sum() == (out["method"] == "A").sum()  # the other method stays
    reals, suffix = kfold.hold_out(out, real_only=True)
    assert suffix == "_noFakes"
    assert set(reals.loc[reals["split"] != "test", "label"]) == {0}
    assert (reals["label"] == 0).sum() == (out["label"] == 0).sum()
    for held in (no_b, reals):  # the test split is untouched: its held-out fakes are unseen there
        pd.testing.assert_frame_equal(held[held["split"] == "test"].reset_index(drop=True),
                                      test.reset_index(drop=True))
    same, suffix = kfold.hold_out(out)
    assert same is out and suffix == ""
    with pytest.raises(SystemExit, match="no crop has method"):
        kfold.hold_out(out, method="C")


FAKE_DFD = """#!/usr/bin/env bash
echo "$*" >> "$CALLS"
out=""; prev=""
for a in "$@"; do
  case $a in out=*) out=${a#out=} ;; esac
  [ "$prev" = --out ] && out=$a
  prev=$a
done
mkdir -p "$out"
case $1 in
  train) touch "$out/model.onnx" ;;
  evaluate) echo {} > "$out/metrics.json" ;;
  calibrate) touch "$out/model.onnx" "$out/calibration.json" ;;
esac
"""

# stands in for .venv/bin/python running scripts/average_weights.py: logs, then writes its last file
FAKE_PYTHON = """#!/usr/bin/env bash
echo "average $*" >> "$CALLS"
out=""; prev=""
for a in "$@"; do [ "$prev" = --out ] && out=$a; prev=$a; done
mkdir -p "$out" && touch "$out/model.safetensors" "$out/summary.json"
"""


def _run_folds(tmp: Path, *folds: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(REPO / "scripts/run_folds.sh"), str(tmp / "corpus/manifest.parquet"),
                           str(tmp / "work"), *folds], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "DFD": str(tmp / "dfd"), "CALLS": str(tmp / "calls"), **env})


def test_run_folds_trains_both_stages_then_skips_and_resumes(tmp_path: Path) -> None:
    (tmp_path / "dfd").write_text(FAKE_DFD)
    (tmp_path / "dfd").chmod(0o755)
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus/manifest_fold0.parquet").touch()
    result = _run_folds(tmp_path, "0", STAGE="2")
    assert result.returncode == 0, result.stderr
    calls = (tmp_path / "calls").read_text().splitlines()
    assert [c.split()[0] for c in calls] == ["train", "evaluate", "train", "evaluate"]
    assert "--resume" not in calls[0] and f"out={tmp_path}/work/stage1_fold0" in calls[0]
    assert f"model.pretrained={tmp_path}/work/stage1_fold0/model.safetensors" in calls[2]
    assert "data.augment.jpeg_p=0.7" in calls[2] and "data.augment.jpeg_p" not in calls[0]
    evals = [f"{tmp_path}/work/eval_stage1_fold0", f"{tmp_path}/work/eval_stage2_fold0"]
    assert result.stdout.split() == evals

    (tmp_path / "calls").unlink()
    assert _run_folds(tmp_path, "0", STAGE="2").returncode == 0
    assert not (tmp_path / "calls").exists()  # everything finished: nothing runs again

    (tmp_path / "work/stage2_fold0/model.onnx").unlink()  # an interrupted stage 2
    (tmp_path / "work/stage2_fold0/last.ckpt").touch()
    assert _run_folds(tmp_path, "0", STAGE="2").returncode == 0
    calls = (tmp_path / "calls").read_text().splitlines()
    assert len(calls) == 1 and calls[0].startswith("train") and "--resume" in calls[0]

    missing = _run_folds(tmp_path, "0", METHOD="NeuralTextures")
    assert missing.returncode == 2 and "manifest_fold0_noNeuralTextures.parquet" in missing.stderr


def test_run_folds_counts_kept_weights_as_finished_only_when_not_evaluating(tmp_path: Path) -> None:
    """A session keeps a finished leg's weights and summary without its ONNX (models/checkpoints/):
    a recipe leg (EVALUATE=0) is then done; an evaluated run still needs its ONNX, so it trains."""
    (tmp_path / "dfd").write_text(FAKE_DFD)
    (tmp_path / "dfd").chmod(0o755)
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus/manifest_fold0.parquet").touch()
    kept = tmp_path / "work/stage1_fold0"
    kept.mkdir(parents=True)
    (kept / "model.safetensors").touch()
    assert _run_folds(tmp_path, "0", EVALUATE="0").returncode == 0
    assert "train" in (tmp_path / "calls").read_text()  # no summary.json: the run did not finish
    (tmp_path / "calls").unlink()
    (kept / "model.onnx").unlink()
    (kept / "summary.json").touch()  # written last by dfd train
    assert _run_folds(tmp_path, "0", EVALUATE="0").returncode == 0
    assert not (tmp_path / "calls").exists()
    assert _run_folds(tmp_path, "0").returncode == 0
    assert [c.split()[0] for c in (tmp_path / "calls").read_text().splitlines()] == ["train", "evaluate"]


def test_run_folds_variant_gets_its_overrides_and_its_own_runs(tmp_path: Path) -> None:
    (tmp_path / "dfd").write_text(FAKE_DFD)
    (tmp_path / "dfd").chmod(0o755)
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus/manifest_fold0.parquet").touch()
    (tmp_path / "work/stage1_fold0").mkdir(parents=True)
    (tmp_path / "work/stage1_fold0/model.onnx").touch()  # the plain recipe's run must not count
    result = _run_folds(tmp_path, "0", SET="model.arch=efficientnet_lite1 model.input_size=240", TAG="lite1")
    assert result.returncode == 0, result.stderr
    calls = (tmp_path / "calls").read_text().splitlines()
    assert [c.split()[0] for c in calls] == ["train", "evaluate"]
    assert f"out={tmp_path}/work/stage1_lite1_fold0" in calls[0]
    assert calls[0].split()[-2:] == ["model.arch=efficientnet_lite1", "model.input_size=240"]
    assert result.stdout.split() == [f"{tmp_path}/work/eval_stage1_lite1_fold0"]


def _default_recipe(tmp: Path, **env: str) -> subprocess.CompletedProcess[str]:
    for name, text in (("dfd", FAKE_DFD), ("python", FAKE_PYTHON)):
        (tmp / name).write_text(text)
        (tmp / name).chmod(0o755)
    script = str(REPO / "scripts/default_recipe.sh")
    return subprocess.run(["bash", script, str(tmp / "corpus/manifest.parquet"), str(tmp / "w"), "3"],
                          cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "DFD": str(tmp / "dfd"), "PYTHON": str(tmp / "python"),
                               "CALLS": str(tmp / "calls"), **env})


def test_default_recipe_chains_every_step_of_the_shipped_model_and_resumes(tmp_path: Path) -> None:
    (tmp_path / "corpus").mkdir()
    assert _default_recipe(tmp_path).returncode == 2  # no fold manifest yet: a clear error, nothing runs
    assert not (tmp_path / "calls").exists()
    (tmp_path / "corpus/manifest_fold3.parquet").touch()
    result = _default_recipe(tmp_path)
    assert result.returncode == 0, result.stderr
    w = tmp_path / "w"
    assert result.stdout.split() == [f"{w}/eval_v7_fold3"]
    calls = (tmp_path / "calls").read_text().splitlines()
    assert [c.split()[0] for c in calls] == ["train", "evaluate"] * 5 + [
        "average", "train", "evaluate", "average", "train", "evaluate", "average", "calibrate", "evaluate"]
    trains = [c for c in calls if c.startswith("train")]
    starts = [next((a.split("=", 1)[1] for a in c.split() if a.startswith("model.pretrained=")), None)
              for c in trains]
    weights = [f"{w}/{run}/model.safetensors" for run in (
        "stage1_fold3", "stage1_cont3_fold3", "stage1_cont6_fold3", "stage1_cont9_fold3",
        "stage1_cont6low_fold3", "v5_fold3", "v6_fold3", "stage1_v6jc_fold3")]
    assert starts == [None, *weights[:3], weights[2], weights[5], weights[6]]
    assert [t.split()[-1] for t in trains[1:5]] == ["seed=1", "seed=2", "seed=3", "seed=4"]
    assert "optim.lr=5e-5" in trains[4] and "consistency.weight" not in " ".join(trains[:5])
    assert all("consistency.weight=0.5" in t for t in trains[5:])
    assert "seed=11" in trains[5] and "seed=12" in trains[6]
    assert all("optim.lr=1e-4" in t for t in trains[5:])  # each consistency leg, not just one of them
    averages = [c.split() for c in calls if c.startswith("average")]
    assert averages[0][2:5] == weights[2:5]  # v5: leg 3 and its two children
    assert averages[2][2:4] == weights[6:8]  # v7: v6 and its consistency child
    calibrate = next(c for c in calls if c.startswith("calibrate"))
    assert "--tta hflip" in calibrate and f"{w}/v7_fold3/model.safetensors" in calibrate

    (tmp_path / "calls").unlink()  # finished: a rerun runs nothing
    assert _default_recipe(tmp_path).returncode == 0 and not (tmp_path / "calls").exists()

    (w / "stage1_v6jc_fold3/model.onnx").unlink()  # interrupted in v7's consistency leg: resumed, then on
    (w / "stage1_v6jc_fold3/last.ckpt").touch()
    for folder in ("v7_fold3", "v7_fold3_cal", "eval_v7_fold3"):
        shutil.rmtree(w / folder)
    assert _default_recipe(tmp_path, STEP_EVALS="1").returncode == 0
    calls = (tmp_path / "calls").read_text().splitlines()
    assert [c.split()[0] for c in calls] == ["calibrate", "evaluate", "calibrate", "evaluate", "train",
                                             "average", "calibrate", "evaluate"]
    assert "--resume" in calls[4] and "--tta" not in calls[0] + calls[2]


def test_default_recipe_without_leg_evaluations_evaluates_only_the_final_model(tmp_path: Path) -> None:
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus/manifest_fold3.parquet").touch()
    result = _default_recipe(tmp_path, LEG_EVALS="0")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [f"{tmp_path}/w/eval_v7_fold3"]
    calls = [c.split()[0] for c in (tmp_path / "calls").read_text().splitlines()]
    assert calls == ["train"] * 5 + ["average", "train", "average", "train", "average",
                                     "calibrate", "evaluate"]
    assert not list((tmp_path / "w").glob("eval_stage1_*"))


def test_default_recipe_goes_on_from_a_committed_mean_without_its_legs(tmp_path: Path) -> None:
    """A session that kept only v5's mean (not the five legs' weights) resumes at v6's consistency leg."""
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus/manifest_fold3.parquet").touch()
    v5 = tmp_path / "w/v5_fold3"
    v5.mkdir(parents=True)
    (v5 / "model.safetensors").touch()
    (v5 / "summary.json").touch()
    result = _default_recipe(tmp_path, LEG_EVALS="0")
    assert result.returncode == 0, result.stderr
    calls = (tmp_path / "calls").read_text().splitlines()
    assert [c.split()[0] for c in calls] == ["train", "average", "train", "average", "calibrate", "evaluate"]
    assert f"model.pretrained={v5}/model.safetensors" in calls[0] and "seed=11" in calls[0]
    assert not (tmp_path / "w/stage1_fold3").exists()

    (tmp_path / "calls").unlink()  # with leg evaluations wanted, the legs run (and are evaluated) after all
    for folder in ("v7_fold3_cal", "eval_v7_fold3"):
        shutil.rmtree(tmp_path / "w" / folder)
    assert _default_recipe(tmp_path).returncode == 0
    calls = (tmp_path / "calls").read_text().splitlines()
    assert [c.split()[0] for c in calls][:10] == ["train", "evaluate"] * 5


def test_default_recipe_leaves_one_method_out_in_every_step(tmp_path: Path) -> None:
    """METHOD=M: the shipped recipe on the fold's manifest without M's fakes, in runs of their own."""
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus/manifest_fold3.parquet").touch()  # the plain fold must not be used
    missing = _default_recipe(tmp_path, METHOD="FaceSwap", LEG_EVALS="0")
    assert missing.returncode == 2 and "manifest_fold3_noFaceSwap.parquet" in missing.stderr
    lomo = tmp_path / "corpus/manifest_fold3_noFaceSwap.parquet"
    lomo.touch()
    result = _default_recipe(tmp_path, METHOD="FaceSwap", LEG_EVALS="0")
    assert result.returncode == 0, result.stderr
    w = tmp_path / "w"
    assert result.stdout.split() == [f"{w}/eval_v7_fold3_noFaceSwap"]
    calls = (tmp_path / "calls").read_text().splitlines()
    steps = ["average", "train", "average", "train", "average", "calibrate", "evaluate"]
    assert [c.split()[0] for c in calls] == ["train"] * 5 + steps
    trains = [c for c in calls if c.startswith("train")]
    assert all(f"data.manifests=[{lomo}]" in c for c in trains)
    assert f"out={w}/stage1_v6jc_fold3_noFaceSwap" in trains[-1]
    assert f"model.pretrained={w}/v6_fold3_noFaceSwap/model.safetensors" in trains[-1]
    assert all(str(lomo) in c for c in calls if c.startswith(("calibrate", "evaluate")))
    assert not list(w.glob("*_fold3")) and not list(w.glob("stage1_fold3"))


def _evaluation(folder: Path, n_ffpp_groups: int) -> Path:
    """A product-path evaluation folder: FF++ frames of `n_ffpp_groups` groups, 2 c40 groups."""
    rng = np.random.default_rng(1)
    rows = []
    for dataset, n_groups in (("ffpp_crops", n_ffpp_groups), ("ffpp_c40", 2), ("utk_real", 30)):
        for g in range(n_groups):
            for label in ((0,) if dataset == "utk_real" else (0, 1)):
                score = float(np.clip(rng.normal(0.3 + 0.4 * label, 0.2), 0, 1))
                rows.append({"dataset": dataset, "group": f"{dataset}{g}", "label": label, "score": score,
                             "method": "Deepfakes" if label else "real", "score_jpeg50": score * 0.9})
    folder.mkdir()
    pd.DataFrame(rows).to_csv(folder / "scores.csv", index=False)
    pd.DataFrame(columns=["dataset", "group", "label", "score"]).to_csv(folder / "videos.csv", index=False)
    (folder / "metrics.json").write_text(json.dumps({"threshold": 0.5, "data": {"mode": "product path"}}))
    return folder


def test_validation_report_gives_intervals_only_over_enough_identity_groups(tmp_path: Path) -> None:
    report = load_script("validation_report").report([_evaluation(tmp_path / "e0", 12),
                                                  _evaluation(tmp_path / "e1", 12)])
    rows = {line.split(" | ")[0].lstrip("| "): line for line in report.splitlines()
            if line.startswith("| FF++")}
    assert "[" in rows["FF++ c23 held-out identities, frame AUC"]  # 24 groups: an interval
    c40 = rows["FF++ c40 clips of held-out identities, frame AUC"]
    assert "no interval: fewer than 5 identity groups" in c40  # 2 groups in each of 2 folds
    assert "AUC drop under JPEG 50" in report and "H.264" not in report  # a sweep the runs did not have
    assert "| gan_faces held out, AUC | n/a (no such test data) |" in report  # no crash
    coded = tmp_path / "e2"
    _evaluation(coded, 12)
    scores = pd.read_csv(coded / "scores.csv")
    scores.assign(score_h264_crf40=scores["score"] * 0.5 + 0.2).to_csv(coded / "scores.csv", index=False)
    row = next(line for line in load_script("validation_report").report([coded]).splitlines()
               if line.startswith("| AUC drop under H.264 CRF 40"))
    assert row.endswith("| reported |")  # measured (`dfd evaluate --robustness h264_crf40`), not a bar


def test_validation_report_pools_folds_at_each_models_threshold(tmp_path: Path) -> None:
    script = load_script("validation_report")
    folders = [_evaluation(tmp_path / f"e{k}", 6) for k in range(3)]
    scores = [pd.read_csv(f / "scores.csv") for f in folders]
    scores[1]["score"] = np.where(scores[1]["label"] == 1, 0.9, 0.1)  # fold 1's model is perfect
    scores[1].to_csv(folders[1] / "scores.csv", index=False)
    (folders[2] / "metrics.json").write_text(json.dumps({"threshold": 2.0}))  # calls nothing fake
    report = script.report(folders)
    rows = {line.split(" | ")[0].lstrip("| "): line.split(" | ") for line in report.splitlines()
            if line.startswith("| ")}
    ff = rows["FF++ c23 held-out identities, frame AUC"]
    pooled = pd.concat(scores)
    pooled = pooled[pooled["dataset"] == "ffpp_crops"]
    assert ff[1].startswith(f"{script.roc_auc(pooled['label'], pooled['score']):.3f} [")  # 18 groups
    per_fold = [script.roc_auc(s.loc[s["dataset"] == "ffpp_crops", "label"],
                               s.loc[s["dataset"] == "ffpp_crops", "score"]) for s in scores]
    assert ff[2] == f"{np.mean(per_fold):.3f} ({', '.join(f'{a:.3f}' for a in per_fold)})"
    assert "1.000" in ff[2]
    # c40: 2 groups in each of 3 folds = 6 groups over all folds, so the pooled figure has an interval
    assert "[" in rows["FF++ c40 clips of held-out identities, frame AUC"][1]
    thresholds = (0.5, 0.5, 2.0)
    utk = pd.concat([s[s["dataset"] == "utk_real"].assign(t=t)
                     for s, t in zip(scores, thresholds, strict=True)])
    fpr = rows["utk_real held-out reals, FPR at the threshold"][1]
    assert fpr.startswith(f"{(utk['score'] >= utk['t']).mean():.3f}")  # each fold at its threshold
    under = rows["real photos (aaf + utk), FPR at the threshold under JPEG 50"][1]
    assert under.startswith(f"{(utk['score_jpeg50'] >= utk['t']).mean():.3f}")  # the JPEG copy's scores
    fakes = pd.concat([s[s["dataset"].str.startswith("ffpp") & (s["label"] == 1)].assign(t=t)
                       for s, t in zip(scores, thresholds, strict=True)])
    recall = rows["FF++ fakes, recall at the threshold under JPEG 50"][1]
    assert recall.startswith(f"{(fakes['score_jpeg50'] >= fakes['t']).mean():.3f}")
    assert recall != rows["FF++ fakes (c23 + c40), recall at the threshold"][1]


def test_validation_report_leave_one_method_out_from_fold_runs(tmp_path: Path) -> None:
    script = load_script("validation_report")
    nt = _evaluation(tmp_path / "noNT", 12)
    s = pd.read_csv(nt / "scores.csv")
    fakes = s["label"] == 1
    s.loc[fakes, "method"] = np.where(np.arange(fakes.sum()) % 2, "NeuralTextures", "DF")
    s.to_csv(nt / "scores.csv", index=False)
    rows = script.lomo_rows([("NeuralTextures", nt)])
    assert rows[0][0] == "LOMO: NeuralTextures never trained on, 1 fold(s), AUC"
    ff = s[s["dataset"] == "ffpp_crops"]
    ff = ff[(ff["label"] == 0) | (ff["method"] == "NeuralTextures")]
    assert rows[0][1][0] == pytest.approx(script.roc_auc(ff["label"], ff["score"]))
    assert rows[-1][0] == "Leave-one-method-out, mean AUC over 1 method(s)" and rows[-1][1] == rows[0][1]
    df_run = _evaluation(tmp_path / "noDF", 12)  # a second run on the same groups, guessing on DF
    s2 = pd.read_csv(df_run / "scores.csv")
    s2.loc[s2["label"] == 1, "method"] = "DF"
    s2["score"] = np.random.default_rng(5).uniform(0, 1, len(s2))
    s2.to_csv(df_run / "scores.csv", index=False)
    both = script.lomo_rows([("NeuralTextures", nt), ("DF", df_run)])
    name, (mean, low, high), bar = both[-1]
    assert name == "Leave-one-method-out, mean AUC over 2 method(s)" and bar == ">= 0.85"
    assert mean == pytest.approx((both[0][1][0] + both[1][1][0]) / 2)
    assert low < mean < high  # a paired interval over the shared identity groups
    cli = subprocess.run([sys.executable, str(REPO / "scripts/validation_report.py"), str(nt),
                          "--lomo-eval", "no-equals-sign"], capture_output=True, text=True)
    assert cli.returncode == 2 and "METHOD=DIR" in cli.stderr


def test_versus_gives_paired_differences_on_the_same_frames(tmp_path: Path) -> None:
    script = load_script("validation_report")
    base = _evaluation(tmp_path / "base", 12)
    rng = np.random.default_rng(2)
    scores = pd.read_csv(base / "scores.csv").assign(source_id=lambda d: d.index, frame_index=0)
    scores["score"] = rng.uniform(0, 1, len(scores))  # a model that guesses
    scores.to_csv(base / "scores.csv", index=False)
    other = tmp_path / "other"
    other.mkdir()
    better = scores.assign(score=np.where(scores["label"] == 1, 0.99, scores["score"]))  # every fake caught
    better.to_csv(other / "scores.csv", index=False)
    rows = {line.split(" | ")[0].lstrip("| "): line.split(" | ") for line in
            script.compare(base, other).splitlines() if line.startswith("| ")}
    auc = script.roc_auc(scores.loc[scores["dataset"] == "ffpp_crops", "label"],
                         scores.loc[scores["dataset"] == "ffpp_crops", "score"])
    ff = rows["FF++ c23 frame AUC"]
    assert float(ff[1]) == pytest.approx(auc, abs=5e-4) and float(ff[2]) == 1.0
    assert ff[3].startswith(f"{1.0 - auc:+.3f} [+")  # the whole interval above 0
    assert "no interval" not in ff[3] and rows["FF++ c40 frame AUC"][3].strip(" |").startswith("+")
    methods = sorted(set(scores.loc[(scores["label"] == 1) & (scores["dataset"] == "ffpp_crops"), "method"]))
    assert methods
    for method in methods:  # per method, paired: what a leave-one-method-out comparison reads
        row = rows[f"FF++ {method} vs FF++ reals"]
        mine = script._method_vs_reals(method)(scores)
        assert float(row[1]) == pytest.approx(mine, abs=5e-4) and float(row[2]) == 1.0
        assert row[3].startswith(f"{1.0 - mine:+.3f}")
    with pytest.raises(SystemExit, match="not one test split"):
        better.iloc[:10].to_csv(other / "scores.csv", index=False)
        script.compare(base, other)


def test_lomo_versus_pairs_each_held_out_method_and_their_mean(tmp_path: Path) -> None:
    script = load_script("validation_report")
    pairs = []
    for k, method in enumerate(("FaceSwap", "Deepfakes")):  # two LOMO runs on one fold's test groups
        base = _evaluation(tmp_path / f"base{k}", 12)
        scores = pd.read_csv(base / "scores.csv").assign(source_id=lambda d: d.index, frame_index=0)
        scores.loc[scores["label"] == 1, "method"] = method
        scores["score"] = np.random.default_rng(k).uniform(0, 1, len(scores))  # guesses
        scores.to_csv(base / "scores.csv", index=False)
        other = tmp_path / f"other{k}"
        other.mkdir()
        # the other model catches every fake of the first method only
        caught = (scores["label"] == 1) & (k == 0)
        scores.assign(score=np.where(caught, 0.99, scores["score"])).to_csv(other / "scores.csv", index=False)
        pairs.append((method, base, other))
    rows = {line.split(" | ")[0].lstrip("| "): line.split(" | ") for line in
            script.lomo_compare(pairs).splitlines() if line.startswith("| ")}
    base_aucs = []
    for k, (method, base, _) in enumerate(pairs):
        row = rows[f"{method} (`base{k}` / `other{k}`)"]
        auc = script._method_vs_reals(method)(pd.read_csv(base / "scores.csv"))
        base_aucs.append(auc)
        assert float(row[1]) == pytest.approx(auc, abs=5e-4)
    swap, deep = rows["FaceSwap (`base0` / `other0`)"], rows["Deepfakes (`base1` / `other1`)"]
    assert float(swap[2]) == 1.0 and swap[3].startswith(f"{1.0 - base_aucs[0]:+.3f} [+")
    assert deep[3].strip(" |") == "+0.000 [+0.000, +0.000]"  # the same scores: no difference
    mean = rows["mean over 2 method(s)"]
    assert float(mean[1]) == pytest.approx(np.mean(base_aucs), abs=5e-4) and float(mean[2]) == pytest.approx(
        (1.0 + base_aucs[1]) / 2, abs=5e-4)
    assert mean[3].startswith(f"{(1.0 - base_aucs[0]) / 2:+.3f} [+")  # half the first method's gain
    cli = subprocess.run([sys.executable, str(REPO / "scripts/validation_report.py"), str(pairs[0][1]),
                          "--lomo-versus", "FaceSwap", str(pairs[0][1]), str(pairs[0][2])],
                         capture_output=True, text=True, cwd=REPO)
    assert cli.returncode == 0 and "| mean over 1 method(s) |" in cli.stdout


def test_lomo_versus_averages_seed_replicates_instead_of_pooling_their_scores(tmp_path: Path) -> None:
    script = load_script("validation_report")
    pairs = []
    for seed in (0, 1):  # two seeds of each arm, scored on the same frames
        base = _evaluation(tmp_path / f"a{seed}", 12)
        scores = pd.read_csv(base / "scores.csv").assign(source_id=lambda d: d.index, frame_index=0)
        scores.loc[scores["label"] == 1, "method"] = "FaceSwap"
        rng = np.random.default_rng(seed)
        scores["score"] = rng.uniform(0, 1, len(scores)) + 0.3 * scores["label"]  # a weak detector
        scores.to_csv(base / "scores.csv", index=False)
        other = tmp_path / f"b{seed}"
        other.mkdir()
        # seed 1's model scores on another scale: every score shifted up, the same ranking
        scores.assign(score=scores["score"] + 5.0 * seed).to_csv(other / "scores.csv", index=False)
        pairs.append((f"FaceSwap:seed{seed}", base, other))
    rows = {line.split(" | ")[0].lstrip("| "): line.split(" | ") for line in
            script.lomo_compare(pairs).splitlines() if line.startswith("| ")}
    aucs = [script._method_vs_reals("FaceSwap")(pd.read_csv(base / "scores.csv")) for _, base, _ in pairs]
    assert float(rows["FaceSwap:seed1 (`a1` / `b1`)"][1]) == pytest.approx(aucs[1], abs=5e-4)
    mean = rows["mean over 1 method(s)"]
    # averaged per seed: the shift changes no seed's ranking, so no difference (pooling would see one)
    assert float(mean[1]) == pytest.approx(np.mean(aucs), abs=5e-4) and float(mean[2]) == float(mean[1])
    assert mean[3].strip(" |") == "+0.000 [+0.000, +0.000]"


def test_ensemble_scores_averages_member_logits_row_by_row(tmp_path: Path) -> None:
    script = load_script("ensemble_scores")
    members = []
    for k in range(2):
        folder = _evaluation(tmp_path / f"m{k}", 6)
        scores = pd.read_csv(folder / "scores.csv").assign(source_id=lambda d: d.index, frame_index=0)
        scores["score"] = np.random.default_rng(k).uniform(0.01, 0.99, len(scores))
        scores["score_jpeg50"] = scores["score"] * 0.9
        videos = pd.DataFrame({"source_id": ["v0", "v1"], "dataset": "ffpp_c23", "group": ["a", "b"],
                               "label": [0, 1], "score": [0.2, 0.9 - 0.5 * k]})
        if k:  # stored in another row order: rows are matched by id, not by position
            scores, videos = scores.iloc[::-1], videos.iloc[::-1]
        scores.to_csv(folder / "scores.csv", index=False)
        videos.to_csv(folder / "videos.csv", index=False)
        members.append(folder)
    out = tmp_path / "ens"
    assert script.main([str(m) for m in members] + ["--out", str(out)]) == 0
    a, b, e = (pd.read_csv(f / "scores.csv").set_index("source_id").sort_index() for f in (*members, out))
    logit = lambda p: np.log(p / (1 - p))  # noqa: E731
    np.testing.assert_allclose(logit(e["score"]), (logit(a["score"]) + logit(b["score"])) / 2, atol=1e-9)
    np.testing.assert_allclose(logit(e["score_jpeg50"]),
                               (logit(a["score_jpeg50"]) + logit(b["score_jpeg50"])) / 2, atol=1e-6)
    assert (e["label"] == a["label"]).all()
    v = pd.read_csv(out / "videos.csv").set_index("source_id")
    assert v.loc["v1", "score"] == pytest.approx(1 / (1 + np.exp(-(logit(0.9) + logit(0.4)) / 2)))
    assert "screen" in json.loads((out / "metrics.json").read_text())
    # members of different test splits are refused, and nothing is written for them
    pd.read_csv(members[1] / "scores.csv").iloc[:-3].to_csv(members[1] / "scores.csv", index=False)
    assert script.main([str(m) for m in members] + ["--out", str(tmp_path / "bad")]) == 2
    assert not (tmp_path / "bad" / "scores.csv").exists()


def test_sharpness_report_finds_a_model_that_reads_blur_as_fake(tmp_path: Path) -> None:
    import cv2

    script = load_script("sharpness_report")
    rng = np.random.default_rng(0)
    (tmp_path / "crops").mkdir()
    rows, frames = [], []
    for i in range(60):  # FF++ crop reals and FaceSwap fakes, and real photos; a third of each blurred
        dataset, label = ("utk_real", 0) if i >= 40 else ("ffpp_crops", int(i % 2))
        blur = 0.5 + 2.5 * (i % 3 == 0)
        img = cv2.GaussianBlur(rng.integers(0, 255, (64, 64), dtype=np.uint8), (0, 0), blur)
        cv2.imwrite(str(tmp_path / "crops" / f"{i}.png"), img)
        source = f"csv:corpus/{i}.png"
        rows.append({"crop_path": f"crops/{i}.png", "source_id": source, "dataset": dataset,
                     "method": "FaceSwap" if label else "real"})
        score = 0.9 if i % 3 == 0 else 0.1 + 0.01 * (i % 7)  # blurred = fake, whatever the label
        frames.append({"source_id": hashlib.sha256(source.encode()).hexdigest()[:16], "label": label,
                       "dataset": dataset, "method": rows[-1]["method"], "score": score})
    pd.DataFrame(rows).to_parquet(tmp_path / "manifest.parquet")
    evaluation = tmp_path / "eval"
    evaluation.mkdir()
    pd.DataFrame(frames).to_csv(evaluation / "scores.csv", index=False)
    (evaluation / "metrics.json").write_text(json.dumps({"threshold": 0.5}))
    text = script.report(tmp_path / "manifest.parquet", [evaluation])
    row = next(line for line in text.splitlines() if line.startswith("| `eval`")).split(" | ")
    photos, ff_reals, swap = row[1], row[2], row[5]
    for cell in (photos, ff_reals):  # the blurred third (or most of it) flagged, no sharp real
        blurriest, sharpest = (float(x) for x in cell.split("third ")[1].split(" / "))
        assert blurriest > 0.8 and sharpest == 0.0 and float(cell.split(";")[0].split()[1]) < -0.5
    pooled, within = (float(x) for x in swap.strip(" |").split(" / "))
    assert pooled == pytest.approx(0.5, abs=0.1) and within == pytest.approx(0.5, abs=0.15)  # blind to swaps
    assert "| ffpp_crops | FaceSwap |" in text and row[3] == "n/a"  # no Deepfakes in this corpus


def test_blurry_face_threshold_is_a_training_quantile_and_splits_false_alarms(tmp_path: Path) -> None:
    import cv2

    script = load_script("blurry_face_threshold")
    rng = np.random.default_rng(0)
    (tmp_path / "crops").mkdir()
    rows, frames = [], []
    for i in range(60):  # reals: photos and FF++ crops, train and test; every third blurred
        dataset = "utk_real" if i % 2 else "ffpp_crops"
        blurred = i % 3 == 0
        img = rng.integers(0, 255, (96, 96, 3), dtype=np.uint8)
        img = cv2.GaussianBlur(img, (0, 0), 3.0) if blurred else img
        cv2.imwrite(str(tmp_path / "crops" / f"{i}.png"), img)
        source = f"csv:corpus/{i}.png"
        rows.append({"crop_path": f"crops/{i}.png", "source_id": source, "dataset": dataset, "method": "real",
                     "split": "train" if i < 30 else "test", "label": 0})
        if i >= 30:  # the evaluation's test frames
            frames.append({"source_id": hashlib.sha256(source.encode()).hexdigest()[:16], "label": 0,
                           "dataset": dataset, "score": 0.9 if i in (30, 33, 36, 39) else 0.1})  # blurred
    pd.DataFrame(rows).to_parquet(tmp_path / "manifest.parquet")
    evaluation = tmp_path / "eval"
    evaluation.mkdir()
    pd.DataFrame(frames).to_csv(evaluation / "scores.csv", index=False)
    (evaluation / "metrics.json").write_text(json.dumps({"threshold": 0.5}))
    below, n = script.training_threshold(tmp_path / "manifest.parquet", 1 / 3)
    sharpness = [script.stored_crop_sharpness(str(tmp_path / r["crop_path"])) for r in rows[:30]]
    assert n == 30 and below == pytest.approx(np.quantile(sharpness, 1 / 3))
    assert max(sharpness[::3]) < below < min(s for k, s in enumerate(sharpness) if k % 3)  # the blurred third
    text = script.report(tmp_path / "manifest.parquet", tmp_path / "manifest.parquet", [evaluation], 1 / 3)
    assert f"crop sharpness {below:.1f}, the 0.333 quantile of 30 training reals" in text
    row = next(line for line in text.splitlines() if line.startswith("| `eval`")).strip(" |").split(" | ")
    assert row[1:5] == ["0.400 (5)", "0.000 (10)", "0.400 (5)", "0.000 (10)"]  # 2 of each pool's 5 blurred
    assert row[5].startswith("0.33 / ")  # no fakes here: their share is NaN


def test_archived_evaluation_names_no_file_and_gives_the_same_report(tmp_path: Path) -> None:
    folder = _evaluation(tmp_path / "e0", 12)
    scores = pd.read_csv(folder / "scores.csv")
    scores["source_path"] = [f"/corpus/secret_{i:05d}.jpg" for i in range(len(scores))]
    scores["source_id"] = "csv:corpus/" + scores["source_path"]
    photos = scores["dataset"] == "utk_real"  # a photo is its own identity group, named after its file
    scores.loc[photos, "group"] = "csv:f0-utk_real:secret_" + scores.loc[photos, "group"] + ".jpg"
    scores.to_csv(folder / "scores.csv", index=False)
    (folder / "metrics.json").write_text(json.dumps(
        {"threshold": 0.5, "data": {"mode": "product path (decode, detect, crop, classify)",
                                    "unreadable_sources": [{"path": "/corpus/secret_broken.jpg"}]}}))
    archived = load_script("archive_evaluation").archive(folder, tmp_path / "kept")
    assert "secret" not in "".join(p.read_text() for p in archived.iterdir())
    kept = pd.read_csv(archived / "scores.csv")
    assert kept["source_id"].nunique() == len(scores) and "source_path" not in kept.columns
    assert kept["group"].nunique() == scores["group"].nunique()
    assert json.loads((archived / "metrics.json").read_text())["data"]["unreadable_sources"] == 1
    script = load_script("validation_report")
    assert script.report([archived]) == script.report([folder])
    (folder / "metrics.json").write_text(json.dumps({"threshold": 0.5, "data": {"mode": "stored crops"}}))
    with pytest.raises(SystemExit, match="not a product-path evaluation"):
        load_script("archive_evaluation").archive(folder, tmp_path / "crops")


def test_committed_corpus_listing_keeps_every_ffpp_identity_in_one_fold() -> None:
    """configs/corpus_listing.csv pins the k-fold split across sessions and machines: every file has
    a fold, and the clips of one FF++ id group (XXX, XXX_YYY, YYY_XXX, any compression) share a group."""
    listing = pd.read_csv(REPO / "configs/corpus_listing.csv")
    assert listing["group"].str.fullmatch(r"f[0-4]-.+").all()
    assert set(listing["dataset"]) == {"ffpp_crops", "ffpp_c23", "ffpp_c40", "ffpp_c40_actors", "aaf_real",
                                       "utk_real", "gan_faces"}
    clips = listing[listing["dataset"].isin(["ffpp_c23", "ffpp_c40"])]
    group_of_id: dict[str, str] = {}
    for path, group in zip(clips["path"], clips["group"], strict=True):
        for clip_id in Path(path).stem.split("_"):
            assert group_of_id.setdefault(clip_id, group) == group, path
    assert {g[:2] for g in clips.loc[clips["dataset"] == "ffpp_c40", "group"]} == {"f0", "f1", "f2"}


def test_jpeg_drop_by_source_finds_the_source_that_carries_the_drop(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    script = load_script("jpeg_drop_by_source")
    rng = np.random.default_rng(0)
    rows = []
    for ds, fake_shift in (("video", -0.5), ("photos", 0.0)):
        for label in (0, 1):
            for _ in range(50):
                score = float(np.clip(rng.normal(0.3 + 0.4 * label, 0.1), 0, 1))
                rows.append({"dataset": ds, "label": label, "score": score,
                             "score_jpeg50": max(0.0, score + (fake_shift if label else 0.0))})
    scores = pd.DataFrame(rows)
    shifts, lost = script.drop_by_source(scores, "jpeg50")
    video_fakes = shifts[(shifts["dataset"] == "video") & (shifts["label"] == 1)]["mean"].item()
    assert video_fakes < -0.4 and shifts[shifts["dataset"] == "photos"]["mean"].abs().max() == 0
    assert lost["video"] > 0.1 and lost["photos"] == 0.0  # only the video fakes lose their evidence
    with pytest.raises(KeyError, match="score_blur1"):
        script.drop_by_source(scores, "blur1")
    scores.to_csv(tmp_path / "scores.csv", index=False)
    assert script.main([str(tmp_path)]) == 0
    assert "video" in capsys.readouterr().out
    assert script.main([str(tmp_path / "missing")]) == 2


def test_evaluate_stored_crops_serves_crops_made_like_training_crops(monkeypatch: pytest.MonkeyPatch) -> None:
    """The diagnosis crops at the stored size, then shrinks with INTER_AREA (not the product path's
    direct crop), and routes both the photo and the video path through that crop."""
    import cv2

    import deepfake_detection.infer.predictor as predictor_module
    import deepfake_detection.infer.video as video_module
    from deepfake_detection.faces import Face, crop_face
    from deepfake_detection.models.spec import CropProtocol

    script = load_script("evaluate_stored_crops")
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (400, 400, 3), dtype=np.uint8)  # fine texture: the filters differ
    face = Face(box=np.array([100, 100, 300, 300], np.float32), score=0.99)
    protocol = CropProtocol()
    expected = cv2.resize(crop_face(image, face, 256, protocol), (64, 64), interpolation=cv2.INTER_AREA)
    got = script.stored_size_crop(image, face, 64, protocol, 256)
    np.testing.assert_array_equal(got, expected)
    assert np.abs(got.astype(int) - crop_face(image, face, 64, protocol).astype(int)).mean() > 1
    monkeypatch.setattr(predictor_module, "crop_faces", predictor_module.crop_faces)  # restored after
    monkeypatch.setattr(video_module, "crop_face", video_module.crop_face)
    script.use_stored_size_crops(256)
    np.testing.assert_array_equal(predictor_module.crop_faces(image, [face], 64, protocol)[0], expected)
    np.testing.assert_array_equal(video_module.crop_face(image, face, 64, protocol), expected)
