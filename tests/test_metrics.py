"""Evaluation metrics, calibration, perturbations, plots and reports; scikit-learn is the reference."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from deepfake_detection.evaluate import (
    PERTURBATIONS,
    average_precision,
    binary_metrics,
    bootstrap_auc_ci,
    breakdown,
    calibrated,
    choose_threshold,
    compare_table,
    eer,
    evaluate_predictions,
    expected_calibration_error,
    fit_calibration,
    fit_platt,
    fit_temperature,
    log_loss,
    make_plots,
    precision_recall_curve,
    robustness_table,
    roc_auc,
    roc_curve,
    sigmoid,
    summarize,
    video_level,
    write_comparison,
    write_report,
)
from deepfake_detection.evaluate import plots as eplots

FIXED = [
    ([0, 1], [0.2, 0.8]),
    ([1, 0], [0.2, 0.8]),
    ([0, 1], [0.5, 0.5]),                      # a single tie
    ([0, 0, 1], [0.1, 0.4, 0.4]),
    ([0, 1, 1, 0, 1], [0.3, 0.3, 0.9, 0.9, 0.1]),
    ([0, 0, 0, 1, 1, 1, 1], [0.0, 0.5, 0.5, 0.5, 0.5, 1.0, 1.0]),
]


def _random_cases(n_cases: int = 30) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(7)
    cases: list[tuple[np.ndarray, np.ndarray]] = []
    while len(cases) < n_cases:
        n = int(rng.choice([2, 3, 5, 17, 200, 2000]))
        y = rng.integers(0, 2, n)
        if y.min() == y.max():
            continue
        s = rng.random(n) + 0.5 * y
        if len(cases) % 2:
            s = np.round(s, 1)  # many ties
        cases.append((y, s))
    return cases


CASES = [(np.array(y), np.array(s)) for y, s in FIXED] + _random_cases()


@pytest.mark.parametrize(("y", "s"), CASES)
def test_ranking_metrics_match_sklearn(y: np.ndarray, s: np.ndarray) -> None:
    assert roc_auc(y, s) == pytest.approx(skm.roc_auc_score(y, s), abs=1e-12)
    assert average_precision(y, s) == pytest.approx(skm.average_precision_score(y, s), abs=1e-12)
    fpr, tpr, thr = roc_curve(y, s)
    ref = skm.roc_curve(y, s, drop_intermediate=False)
    np.testing.assert_allclose(fpr, ref[0])
    np.testing.assert_allclose(tpr, ref[1])
    np.testing.assert_array_equal(thr, ref[2])
    prec, rec, pthr = precision_recall_curve(y, s)
    ref = skm.precision_recall_curve(y, s)
    np.testing.assert_allclose(prec, ref[0])
    np.testing.assert_allclose(rec, ref[1])
    np.testing.assert_array_equal(pthr, ref[2])


@pytest.mark.parametrize(("y", "s"), CASES)
def test_threshold_metrics_and_log_loss_match_sklearn(y: np.ndarray, s: np.ndarray) -> None:
    p = np.clip(s / 1.5, 0, 1)
    assert log_loss(y, p) == pytest.approx(skm.log_loss(y, p), rel=1e-9)
    for thr in (0.25, 0.5, 0.6):
        m = binary_metrics(y, p, thr)
        pred = (p >= thr).astype(int)
        assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
        assert m["f1"] == pytest.approx(skm.f1_score(y, pred, zero_division=0.0))
        assert m["recall"] == pytest.approx(skm.recall_score(y, pred))
        if pred.any():
            assert m["precision"] == pytest.approx(skm.precision_score(y, pred))
        else:
            assert m["precision"] is None  # undefined, not a silent 0
        assert m["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, pred))
        tn, fp, fn, tp = skm.confusion_matrix(y, pred, labels=[0, 1]).ravel()
        assert (m["tn"], m["fp"], m["fn"], m["tp"]) == (tn, fp, fn, tp)
        assert m["specificity"] == pytest.approx(tn / (tn + fp))
        assert m["fpr"] == pytest.approx(fp / (fp + tn))


def test_within_source_auc_ignores_a_source_shortcut() -> None:
    from deepfake_detection.evaluate.metrics import within_source_auc

    rng = np.random.default_rng(0)
    # Source A: 400 reals, 100 fakes; source B: 100 reals, 400 fakes. Scores say only "which source"
    # (B high) plus noise, so the pooled AUC is high while no source's fakes outrank its reals.
    src = np.array(["a"] * 500 + ["b"] * 500)
    y = np.array([0] * 400 + [1] * 100 + [0] * 100 + [1] * 400)
    s = rng.normal(0, 0.1, 1000) + (src == "b")
    assert skm.roc_auc_score(y, s) > 0.75
    per = {k: skm.roc_auc_score(y[src == k], s[src == k]) for k in "ab"}
    expected = (per["a"] + per["b"]) / 2  # weights: fake x real pairs, 40,000 in each source
    assert within_source_auc(y, s, src) == pytest.approx(expected)
    assert abs(within_source_auc(y, s, src) - 0.5) < 0.1
    # A source with one class adds no pairs; none with both classes is an error, not a number.
    src_c = np.concatenate([src, ["c"] * 5])
    y_c, s_c = np.concatenate([y, [1] * 5]), np.concatenate([s, [9.0] * 5])
    assert within_source_auc(y_c, s_c, src_c) == pytest.approx(expected)
    with pytest.raises(ValueError, match="both real and fake"):
        within_source_auc([0, 0, 1], [0.1, 0.2, 0.3], ["a", "a", "b"])


def test_log_loss_is_clipped() -> None:
    assert math.isfinite(log_loss([1, 0], [0.0, 1.0]))
    assert log_loss([1, 0], [0.0, 1.0]) == pytest.approx(skm.log_loss([1, 0], [0.0, 1.0]))


def test_eer_known_cases() -> None:
    assert eer([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == 0.0
    assert eer([0, 0, 1, 1], [0.9, 0.8, 0.2, 0.1]) == 1.0
    # Reals 0..3, fakes 1..4: FNR - FPR goes from +1/4 (t=3) to -1/4 (t=2), crossing at 3/8.
    assert eer([0] * 4 + [1] * 4, [0, 1, 2, 3, 1, 2, 3, 4]) == pytest.approx(0.375)
    # Two unit Gaussians 2 apart: EER = Phi(-1).
    rng = np.random.default_rng(0)
    n = 200_000
    s = np.r_[rng.normal(-1, 1, n), rng.normal(1, 1, n)]
    y = np.r_[np.zeros(n), np.ones(n)]
    assert eer(y, s) == pytest.approx(0.158655, abs=3e-3)


def test_ece_calibrated_and_overconfident() -> None:
    rng = np.random.default_rng(1)
    p = rng.random(200_000)
    y = rng.random(p.size) < p
    ece, table = expected_calibration_error(p, y)
    assert ece < 0.01
    assert len(table) == 15 and sum(r["count"] for r in table) == p.size
    sharp = np.where(p > 0.5, 0.99, 0.01)  # same ranking, far too confident
    assert expected_calibration_error(sharp, y)[0] > 0.1
    assert expected_calibration_error([1.0, 0.0], [1, 0])[1][-1]["count"] == 1  # 1.0 falls in the last bin


def test_summarize_single_class_is_safe() -> None:
    out = summarize([0, 0, 0], [0.1, 0.6, 0.2], 0.5)
    assert out["auc"] is None and out["ap"] is None and out["eer"] is None
    assert out["notes"] and out["fpr"] == pytest.approx(1 / 3)
    assert out["recall"] is None
    full = summarize([0, 1, 1, 0], [0.2, 0.7, 0.6, 0.4], 0.5)
    assert full["auc"] == 1.0 and full["eer"] == 0.0 and full["notes"] == []
    with pytest.raises(ValueError, match="one class"):
        roc_auc([1, 1], [0.2, 0.3])
    with pytest.raises(ValueError, match="0 \\(real\\) or 1"):
        roc_auc([0, 2], [0.2, 0.3])


def test_fit_temperature_recovers_known_temperature() -> None:
    rng = np.random.default_rng(2)
    z = rng.normal(0, 2, 50_000)
    y = (rng.random(z.size) < sigmoid(z)).astype(int)
    assert fit_temperature(3 * z, y) == pytest.approx(3.0, rel=0.1)
    assert fit_temperature(z / 2, y) == pytest.approx(0.5, rel=0.1)
    with pytest.raises(ValueError, match="both"):
        fit_temperature(z, np.ones_like(y))


def test_platt_fits_the_offset_that_temperature_scaling_cannot() -> None:
    """Logits offset from the truth (as balanced, self-blended training leaves them on real material):
    P(fake) = sigmoid(z / 2 - 1). Platt recovers T 2 and bias -1 and is calibrated; temperature alone
    stays miscalibrated whatever T it picks. Neither changes the ranking."""
    rng = np.random.default_rng(3)
    z = rng.normal(1.0, 3.0, 50_000)
    y = (rng.random(z.size) < sigmoid(z / 2 - 1)).astype(int)
    temperature, bias = fit_platt(z, y)
    assert temperature == pytest.approx(2.0, rel=0.05) and bias == pytest.approx(-1.0, abs=0.05)
    t_only = fit_temperature(z, y)
    platt_ece = expected_calibration_error(calibrated(z, temperature, bias), y)[0]
    temp_ece = expected_calibration_error(calibrated(z, t_only), y)[0]
    assert platt_ece < 0.01 and temp_ece > 0.05
    assert fit_calibration(z, y, "platt") == (temperature, bias)
    assert fit_calibration(z, y, "temperature") == (t_only, 0.0)
    assert roc_auc(y, calibrated(z, temperature, bias)) == pytest.approx(roc_auc(y, z))
    with pytest.raises(ValueError, match="unknown calibration"):
        fit_calibration(z, y, "isotonic")
    with pytest.raises(ValueError, match="both"):
        fit_platt(z, np.zeros_like(y))


def test_threshold_strategies_on_two_gaussians() -> None:
    rng = np.random.default_rng(3)
    n = 20_000
    s = np.r_[rng.normal(0.3, 0.08, n), rng.normal(0.7, 0.08, n)]
    y = np.r_[np.zeros(n), np.ones(n)]
    assert choose_threshold(s, y, strategy="youden") == pytest.approx(0.5, abs=0.02)
    assert choose_threshold(s, y, strategy="f1") == pytest.approx(0.5, abs=0.03)
    wide = np.r_[rng.normal(0.4, 0.15, n), rng.normal(0.6, 0.15, n)]  # overlapping: TPR < 1 at the target
    for target in (0.01, 0.05, 0.2):
        thr = choose_threshold(wide, y, strategy="fpr", target_fpr=target)
        fpr = binary_metrics(y, wide, thr)["fpr"]
        assert fpr <= target
        assert fpr > target - 0.005  # and it uses the budget
    # A threshold on perfectly separated data separates them.
    thr = choose_threshold([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1])
    assert 0.2 < thr <= 0.8
    with pytest.raises(ValueError, match="both"):
        choose_threshold([0.1, 0.2], [1, 1])
    with pytest.raises(ValueError, match="strategy"):
        choose_threshold(s, y, strategy="best")


def _frames_df() -> pd.DataFrame:
    rows = []
    rng = np.random.default_rng(4)
    for v in range(40):
        label = v % 2
        method = "real" if label == 0 else ["Deepfakes", "FaceSwap"][(v // 2) % 2]
        dataset = "FF++" if v < 30 else "Other"
        base = rng.normal(0.35 + 0.3 * label, 0.12)
        for f in range(8):
            rows.append({"source_id": f"vid{v:02d}", "label": label, "method": method, "dataset": dataset,
                         "group": "test", "score": float(np.clip(base + rng.normal(0, 0.05), 0, 1)),
                         "frame": f})
    return pd.DataFrame(rows)


def test_video_level_means_and_label_consistency() -> None:
    df = pd.DataFrame({"source_id": ["a", "a", "b", "b", "b"], "label": [1, 1, 0, 0, 0],
                       "method": ["X", "X", "real", "real", "real"], "score": [0.2, 0.6, 0.1, 0.2, 0.3]})
    v = video_level(df)
    assert list(v["source_id"]) == ["a", "b"]
    np.testing.assert_allclose(v["score"], [0.4, 0.2])
    assert list(v["label"]) == [1, 0] and list(v["n_frames"]) == [2, 3] and list(v["method"]) == ["X", "real"]
    bad = df.assign(label=[1, 0, 0, 0, 0])
    with pytest.raises(ValueError, match="mix real and fake"):
        video_level(bad)


def test_bootstrap_ci_cluster_is_wider_for_duplicated_frames() -> None:
    rng = np.random.default_rng(5)
    n_videos, copies = 60, 20
    y_v = np.r_[np.zeros(n_videos // 2), np.ones(n_videos // 2)]
    s_v = rng.normal(0, 1, n_videos) + 1.0 * y_v
    y, s = np.repeat(y_v, copies), np.repeat(s_v, copies)  # every frame an identical copy
    groups = np.repeat(np.arange(n_videos), copies)
    point = roc_auc(y, s)
    lo_f, hi_f = bootstrap_auc_ci(y, s, n=500, seed=1)
    lo_c, hi_c = bootstrap_auc_ci(y, s, groups=groups, n=500, seed=1)
    assert lo_c <= point <= hi_c and lo_f <= point <= hi_f
    assert hi_c - lo_c > 2 * (hi_f - lo_f)
    # The cluster interval matches the video-level one (same resampling units).
    lo_v, hi_v = bootstrap_auc_ci(y_v, s_v, n=500, seed=1)
    assert hi_c - lo_c == pytest.approx(hi_v - lo_v, rel=0.3)
    assert bootstrap_auc_ci(y, s, n=200, seed=3) == bootstrap_auc_ci(y, s, n=200, seed=3)


def test_bootstrap_brackets_the_auc_on_many_frames() -> None:
    # Its speed (budget 2 s at this size) is measured by benchmarks/bench_metrics.py, not asserted here.
    rng = np.random.default_rng(6)
    y = rng.integers(0, 2, 20_000)
    s = rng.random(y.size) + 0.3 * y
    lo, hi = bootstrap_auc_ci(y, s, n=1000)
    assert lo < roc_auc(y, s) < hi
    assert hi - lo < 0.03  # 20,000 frames pin the AUC down


def test_breakdown_uses_all_reals_for_methods() -> None:
    df = _frames_df()
    out = breakdown(df, "method", threshold=0.5)
    n_real = int((df["label"] == 0).sum())
    fs = out["FaceSwap"]
    assert fs["real_pool"] == "all" and fs["n_real"] == n_real
    assert fs["n_fake"] == int((df["method"] == "FaceSwap").sum())
    subset = pd.concat([df[df["method"] == "FaceSwap"], df[df["label"] == 0]])
    assert fs["auc"] == pytest.approx(skm.roc_auc_score(subset["label"], subset["score"]))
    assert out["real"]["auc"] is None and out["real"]["real_pool"] == "own"
    per_ds = breakdown(df, "dataset", n_boot=50)
    assert per_ds["Other"]["real_pool"] == "own" and per_ds["Other"]["n_real"] < n_real
    assert len(per_ds["FF++"]["auc_ci"]) == 2


def test_per_method_and_per_dataset_intervals_resample_identity_groups() -> None:
    # Ten people, each with many videos of one class whose scores share the person's offset: per-method
    # and per-dataset intervals must resample people (the cluster_col), as the overall one does, not videos.
    rng = np.random.default_rng(9)
    rows = []
    for person in range(10):
        offset = rng.normal(0, 1)
        for video in range(12):
            label = person % 2
            for _ in range(3):
                rows.append({"group": f"p{person}", "source_id": f"p{person}v{video}", "label": label,
                             "method": "FaceSwap" if label else "real", "dataset": "FF++",
                             "score": 1 / (1 + math.exp(-(offset + 0.5 * label + rng.normal(0, 0.1))))})
    df = pd.DataFrame(rows)
    res = evaluate_predictions(df, threshold=0.5, n_boot=200, cluster_col="group")
    people = df["group"].to_numpy()
    expected = list(bootstrap_auc_ci(df["label"], df["score"], groups=people, n=200, seed=0))
    assert res["frame"]["auc_ci"] == pytest.approx(expected)
    assert res["per_dataset"]["frame"]["FF++"]["auc_ci"] == pytest.approx(expected)
    fs = pd.concat([df[df["label"] == 1], df[df["label"] == 0]])  # breakdown's row order: fakes, all reals
    assert res["per_method"]["frame"]["FaceSwap"]["auc_ci"] == pytest.approx(
        list(bootstrap_auc_ci(fs["label"], fs["score"], groups=fs["group"].to_numpy(), n=200, seed=0)))
    by_video = bootstrap_auc_ci(df["label"], df["score"], groups=df["source_id"].to_numpy(), n=200, seed=0)
    assert by_video[1] - by_video[0] < expected[1] - expected[0]  # the stricter clusters are wider


def test_perturbations_deterministic_and_ordered() -> None:
    rng = np.random.default_rng(8)
    # A smooth image with texture, so that JPEG quality matters.
    yy, xx = np.mgrid[0:96, 0:80]
    img = np.stack([(xx * 3) % 256, (yy * 2) % 256, (xx + yy) % 256], axis=-1).astype(np.float64)
    img = np.clip(img + rng.normal(0, 20, img.shape), 0, 255).astype(np.uint8)
    assert set(PERTURBATIONS) == {"jpeg90", "jpeg70", "jpeg50", "jpeg30", "blur1", "blur2", "blur3",
                                  "down0.5", "down0.25", "noise", "h264_crf32", "h264_crf40"}
    for name, fn in PERTURBATIONS.items():
        out = fn(img)
        assert out.shape == img.shape and out.dtype == np.uint8, name
        np.testing.assert_array_equal(out, fn(img.copy()), err_msg=name)
        assert not np.array_equal(out, img), name

    def err(name: str) -> float:
        return float(np.abs(PERTURBATIONS[name](img).astype(float) - img).mean())

    assert err("jpeg30") > err("jpeg90")
    assert err("blur3") > err("blur1")
    assert err("down0.25") > err("down0.5")
    assert err("h264_crf40") > err("h264_crf32")
    gray = img[..., 0].copy()
    assert PERTURBATIONS["jpeg50"](gray).shape == gray.shape
    odd = np.ascontiguousarray(img[:95, :79])  # 4:2:0 wants even sides: padded and cut back
    assert PERTURBATIONS["h264_crf40"](odd).shape == odd.shape
    assert PERTURBATIONS["h264_crf40"](gray).shape == gray.shape
    with pytest.raises(TypeError):
        PERTURBATIONS["blur1"](img.astype(np.float32))


def test_h264_is_a_video_codec_not_jpeg() -> None:
    """At the same loss, the H.264 round trip smears (intra prediction, deblocking) where JPEG leaves
    8x8 block edges."""
    from skimage import data

    from deepfake_detection.evaluate.robustness import h264, jpeg

    face = np.ascontiguousarray(data.astronaut()[:256, 128:384])
    coded, blocky = h264(face, 45), jpeg(face, 10)

    def block_edge_ratio(img: np.ndarray) -> float:  # column steps on 8 px block borders / elsewhere
        steps = np.abs(np.diff(img.astype(float).mean(axis=2), axis=1)).mean(axis=0)
        on_border = np.zeros(steps.size, bool)
        on_border[7::8] = True
        return float(steps[on_border].mean() / steps[~on_border].mean())

    for img in (coded, blocky):
        assert 6 < np.abs(img.astype(int) - face).mean() < 10  # about the same loss
    assert block_edge_ratio(blocky) > 2.0 > 1.6 > block_edge_ratio(coded) > 1.1 > block_edge_ratio(face)


def test_robustness_table() -> None:
    y = np.array([0, 0, 1, 1])
    table = robustness_table(y, [0.1, 0.2, 0.8, 0.9], {"jpeg30": [0.1, 0.85, 0.8, 0.9]})
    assert table["clean_auc"] == 1.0
    assert table["perturbations"]["jpeg30"]["auc_drop"] == pytest.approx(0.25)
    assert table["mean_auc_drop"] == pytest.approx(0.25)


def _png_ok(path: Path) -> None:
    assert path.exists() and path.stat().st_size > 5_000
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(path.parent.glob(".*.png"))  # no temporary file left behind


def test_plots_written(tmp_path: Path) -> None:
    rng = np.random.default_rng(9)
    y = rng.integers(0, 2, 500)
    p = np.clip(rng.normal(0.35 + 0.3 * y, 0.15), 0, 1)
    _png_ok(eplots.plot_confusion(y, p, 0.5, tmp_path / "c.png"))
    _png_ok(eplots.plot_roc({"frame": (y, p), "video": (y[:100], p[:100])}, tmp_path / "roc.png"))
    _png_ok(eplots.plot_pr({"frame": (y, p)}, tmp_path / "pr.png"))
    _png_ok(eplots.plot_reliability(p, y, tmp_path / "rel.png"))
    _png_ok(eplots.plot_score_hist(y, p, 0.45, tmp_path / "sub" / "hist.png"))


def test_report_end_to_end(tmp_path: Path) -> None:
    df = _frames_df()
    df.loc[df["method"] == "FaceSwap", "method"] = "<script>alert(1)</script>"
    results = evaluate_predictions(df, threshold=0.48, temperature=1.7, n_boot=100,
                                   model={"name": "test-cnn", "arch": "custom_cnn", "params": 123456})
    low, high = results["frame"]["auc_ci"]
    assert low <= results["frame"]["at_threshold"]["auc"] <= high
    assert results["video"]["at_threshold"]["n"] == 40
    results["frame"]["at_threshold"]["log_loss"] = float("nan")  # NaN must become null
    results["robustness"] = {"clean_auc": 0.9, "mean_auc_drop": 0.05,
                             "perturbations": {"jpeg30": {"auc": 0.85, "auc_drop": 0.05}}}
    out = tmp_path / "report"
    results["plots"] = make_plots(df, results, out / "plots")
    assert {"roc", "pr", "roc_per_method", "reliability", "score_hist", "confusion"} <= set(results["plots"])
    for path in results["plots"].values():
        _png_ok(path)
    paths = write_report(results, out, title="Eval <b>test</b>")
    data = json.loads(paths["json"].read_text(), parse_constant=lambda c: pytest.fail(f"JSON has {c}"))
    assert data["frame"]["at_threshold"]["log_loss"] is None
    assert data["threshold"] == 0.48
    page = paths["html"].read_text()
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<b>test</b>" not in page
    assert 'src="plots/roc.png"' in page
    md = paths["md"].read_text()
    assert "<script>" not in md and "![roc](plots/roc.png)" in md
    for heading in ("## Overall", "## Per method", "## Per dataset", "## Robustness", "jpeg30"):
        assert heading in md
    assert "[0." in md  # the AUC confidence interval is printed


def test_comparison(tmp_path: Path) -> None:
    runs = [
        {"name": "custom_cnn", "params": 1_200_000, "file_size_mb": 4.8, "auc": 0.91, "f1": 0.85,
         "eer": 0.16, "robustness_mean_auc_drop": 0.07, "latency_ms_b1": 2.1, "latency_ms_b32": 30.0,
         "throughput_ips": 1000.0},
        {"name": "efficientnet_b0", "params": 4_000_000, "file_size_mb": 16.0, "auc": 0.95, "f1": None,
         "eer": float("nan"), "robustness_mean_auc_drop": 0.04, "latency_ms_b1": 6.0,
         "latency_ms_b32": 80.0, "throughput_ips": 400.0},
    ]
    table = compare_table(runs)
    assert table.count("\n") >= 3 and "efficientnet_b0" in table and "1.20" in table
    paths = write_comparison(runs, tmp_path)
    assert json.loads(paths["json"].read_text())[1]["eer"] is None
    assert "comparison.png" in paths["md"].read_text()
    _png_ok(paths["png"])
