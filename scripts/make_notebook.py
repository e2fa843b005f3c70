"""Writes notebooks/EDA_and_Model_Training.ipynb from the cells below (outputs stripped), so the
notebook's source stays reviewable here. CI executes the notebook (tests/test_notebook.py)."""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

CELLS = [
    ("md", """# Exploring a prepared dataset and training a detector

This notebook uses the library (`deepfake_detection`), not copies of it:

1. `prepare` turns a raw dataset (here `DFD_NOTEBOOK_DATA`, for example `../shared/data/ffpp_c23`,
   or a tiny generated one) into face crops and a Parquet manifest;
2. exploration: counts, face sizes, sample grids of real and fake crops, augmentation preview;
3. a short training run (`configs/tiny.yaml`);
4. evaluation on the held-out test groups, with the report's plots.

Set `DFD_NOTEBOOK_DATA` to a dataset root to explore real data; without it the notebook generates
a small dataset (public-domain faces pasted on generated scenes; fakes made with the project's
self-blending), which is what CI runs."""),
    ("code", """import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from IPython.display import Image, display

from deepfake_detection.data.manifest import read_manifest
from deepfake_detection.data.prepare import PrepareConfig, prepare
from deepfake_detection.data.summary import format_summary

DATA = os.environ.get("DFD_NOTEBOOK_DATA")
WORK = Path(os.environ.get("DFD_NOTEBOOK_WORK", "runs/notebook")).resolve()
WORK.mkdir(parents=True, exist_ok=True)
print("data:", DATA or "generated", "| work folder:", WORK)"""),
    ("md", "## A dataset (generated when none is given)"),
    ("code", """def generate_dataset(root: Path, n: int = 12, seed: int = 0) -> Path:
    \"\"\"Real: a public-domain face pasted on a generated scene. Fake: the same kind of scene with the
    face self-blended (colour/shape-jittered copy blended back inside a face mask).\"\"\"
    from deepfake_detection.data.blend import self_blend
    from deepfake_detection.faces import create_detector
    from dfd_testkit.synthetic import scene, write_image

    rng = np.random.default_rng(seed)
    detector = create_detector("auto")
    for i in range(2 * n):
        image = scene(rng, (360, 480), face=i, scale=rng.uniform(0.45, 0.7))
        label = "real"
        if i % 2:
            faces = detector.detect(image)
            if faces and faces[0].landmarks is not None:
                image, _ = self_blend(image, faces[0].landmarks, rng)
                label = "fake"
        write_image(root / label / f"{label}_{i:03d}.jpg", image)
    return root


root = Path(DATA) if DATA else generate_dataset(WORK / "raw")
summary = prepare([str(root)], WORK / "prepared", PrepareConfig(frames=8, ratios=(0.6, 0.2, 0.2)),
                  progress=False)
print(format_summary(summary))"""),
    ("md", "## Exploration"),
    ("code", """manifest_path = WORK / "prepared" / "manifest.parquet"
df = read_manifest(manifest_path)
display(df.groupby(["split", "label"]).size().unstack(fill_value=0).rename(columns={0: "real", 1: "fake"}))
display(df.groupby(["method"]).size().rename("crops").to_frame())
sides = np.stack(df["box"].to_numpy())
sides = (sides[:, 2:] - sides[:, :2]).max(axis=1)
fig, ax = plt.subplots(figsize=(6, 3))
ax.hist(sides, bins=30)
ax.set(title="face size (longer box side, px)", xlabel="px", ylabel="crops")
plt.show()"""),
    ("code", """import cv2

def grid(rows, title, n=6):
    fig, axes = plt.subplots(1, n, figsize=(2 * n, 2.3))
    for ax, (_, row) in zip(axes, rows.head(n).iterrows()):
        image = cv2.cvtColor(cv2.imread(str(manifest_path.parent / row.crop_path)), cv2.COLOR_BGR2RGB)
        ax.imshow(image)
        ax.set_title(f"{row.method} ({row.split})", fontsize=8)
    for ax in axes:
        ax.axis("off")
    fig.suptitle(title)
    plt.show()

grid(df[df.label == 0].sample(frac=1, random_state=0), "real crops")
grid(df[df.label == 1].sample(frac=1, random_state=0), "fake crops")"""),
    ("code", """from deepfake_detection.data.augment import AugmentConfig
from deepfake_detection.data.preview import preview_from_paths

sheet = preview_from_paths([str(manifest_path)], WORK / "augment_preview.png", augment=AugmentConfig(),
                           max_rows=3)
display(Image(filename=str(sheet)))"""),
    ("md", "## A short training run"),
    ("code", """from deepfake_detection.train import load_config, train

config = load_config("configs/tiny.yaml", [f"data.manifests=[{manifest_path}]", f"out={WORK / 'run'}",
                                            "epochs=2"])
run = train(config, resume=(WORK / "run" / "last.ckpt").exists())
print((run / "metrics.csv").read_text())"""),
    ("md", "## Evaluation on the held-out test groups"),
    ("code", """from deepfake_detection.evaluate.run import evaluate_model

results = evaluate_model(run / "model.onnx", manifest_path, WORK / "eval", split="test",
                         robustness=("jpeg50", "blur2", "down0.5"), n_boot=200)
frame = results["frame"]["at_threshold"]
print(f"frame AUC {frame['auc']}, 95% CI {results['frame']['auc_ci']}, EER {frame['eer']}, "
      f"threshold {results['threshold']:.3f} (chosen on validation)")
for name in ("roc", "reliability", "score_hist", "confusion"):
    if name in results["plots"]:
        display(Image(filename=results["plots"][name]))"""),
]


def build() -> nbformat.NotebookNode:
    cells = [new_markdown_cell(src) if kind == "md" else new_code_cell(src) for kind, src in CELLS]
    notebook = new_notebook(cells=cells)
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return notebook


if __name__ == "__main__":
    target = Path(__file__).resolve().parents[1] / "notebooks" / "EDA_and_Model_Training.ipynb"
    nbformat.write(build(), target)
    print(target)
