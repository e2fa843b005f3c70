"""Train the PROVISIONAL bundled model from ../shared/data (replaced by the default-model issue,
which will use `dfd prepare` and `dfd train`).

It exists so that the README quickstart gives real verdicts from a model trained on real data,
before the data and training pipelines land. Recipe: EfficientNet-Lite0 from its offline ImageNet
weights, face crops made with the project's own detector and crop protocol, FaceForensics++
clips split by identity group (DATA.md), gan_faces, and aaf_real as extra real faces;
JPEG/blur/colour augmentation on both classes; checkpoint, temperature and threshold chosen on the
held-out groups only.

    .venv/bin/python scripts/train_provisional_model.py [--epochs 5] [--calibrate-only]
"""

from __future__ import annotations

import argparse
import io
import json
import re
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image

from deepfake_detection.evaluate.calibration import choose_threshold, fit_temperature
from deepfake_detection.evaluate.metrics import roc_auc as auc
from deepfake_detection.export.onnx import check_parity, export_onnx
from deepfake_detection.faces import create_detector, crop_face
from deepfake_detection.infer.bundled import write_checksum
from deepfake_detection.infer.preprocess import to_batch
from deepfake_detection.io.images import load_image
from deepfake_detection.models.files import save_model
from deepfake_detection.models.registry import create_model, default_spec

ARCH = "efficientnet_lite0"
FRAMES_PER_VIDEO = 24


def ffpp_groups(names: list[str]) -> dict[str, int]:
    """Identity groups: connected components over the ids in FaceForensics++ file names."""
    parent: dict[str, str] = {}

    def find(a: str) -> str:
        while parent.setdefault(a, a) != a:
            a = parent[a]
        return a

    for name in names:
        ids = re.findall(r"\d{3}", name)
        for other in ids[1:]:
            parent[find(other)] = find(ids[0])
    roots = sorted({find(re.findall(r"\d{3}", n)[0]) for n in names})
    return {n: roots.index(find(re.findall(r"\d{3}", n)[0])) for n in names}


def video_crops(path: Path, detector, size: int, count: int) -> list[np.ndarray]:  # type: ignore[no-untyped-def]
    cap = cv2.VideoCapture(str(path))
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    wanted = set(np.linspace(0, max(total - 1, 0), count).astype(int).tolist())
    crops, index = [], 0
    while wanted and index <= max(wanted):
        ok = cap.grab()
        if not ok:
            break
        if index in wanted:
            ok, frame = cap.retrieve()
            if ok:
                rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
                faces = detector.detect(rgb)
                if faces:  # the biggest face: FF++ clips show one subject
                    crops.append(crop_face(rgb, faces[0], size, default_spec(ARCH).crop))
        index += 1
    cap.release()
    return crops


def image_crop(path: Path, detector, size: int) -> np.ndarray | None:  # type: ignore[no-untyped-def]
    rgb = load_image(path)
    faces = detector.detect(rgb)
    return crop_face(rgb, faces[0], size, default_spec(ARCH).crop) if faces else None


def build_dataset(data: Path, cache: Path, size: int) -> dict[str, np.ndarray]:
    if cache.exists():
        with np.load(cache) as loaded:
            return dict(loaded)
    detector = create_detector("retinaface")
    crops, labels, splits, sources = [], [], [], []
    ff = data / "ffpp_c23"
    videos = sorted(ff.glob("original_sequences/youtube/c23/videos/*.mp4")) + sorted(
        ff.glob("manipulated_sequences/*/c23/videos/*.mp4"))
    groups = ffpp_groups([v.stem for v in videos])
    rng = np.random.default_rng(0)
    group_ids = sorted(set(groups.values()))
    val_groups = set(rng.permutation(group_ids)[: max(1, round(len(group_ids) * 0.25))].tolist())
    for i, video in enumerate(videos):
        label = 0 if "original_sequences" in video.parts else 1
        method = "real" if label == 0 else video.parts[-4]
        split = "val" if groups[video.stem] in val_groups else "train"
        for crop in video_crops(video, detector, size, FRAMES_PER_VIDEO):
            crops.append(crop), labels.append(label), splits.append(split), sources.append(f"ffpp:{method}")
        print(f"\rvideos {i + 1}/{len(videos)}", end="", flush=True)
    print()
    images = [(p, 0, "gan") for p in sorted((data / "gan_faces/real").glob("*.jpg"))]
    images += [(p, 1, "gan") for p in sorted((data / "gan_faces/fake").glob("*.jpg"))]
    images += [(p, 0, "aaf") for p in sorted((data / "aaf_real").glob("*.jpg"))[:1200]]
    for j, (path, label, source) in enumerate(images):
        crop = image_crop(path, detector, size)
        if crop is not None:
            split = "val" if rng.random() < 0.25 else "train"
            crops.append(crop), labels.append(label), splits.append(split), sources.append(source)
        if j % 100 == 0:
            print(f"\rimages {j}/{len(images)}", end="", flush=True)
    print()
    arrays = {"crops": np.stack(crops), "labels": np.array(labels, np.int64), "splits": np.array(splits),
              "sources": np.array(sources)}
    np.savez(cache, **arrays)
    return arrays


def augment(crop: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The CNNDetection recipe (JPEG 30-100, blur 0-3, each p=0.5) plus flips and colour jitter."""
    out = crop[:, ::-1] if rng.random() < 0.5 else crop
    if rng.random() < 0.5:
        sigma = rng.uniform(0.1, 3.0)
        out = cv2.GaussianBlur(np.ascontiguousarray(out), (0, 0), sigma)
    if rng.random() < 0.5:
        buffer = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(out)).save(buffer, "JPEG", quality=int(rng.integers(30, 101)))
        out = np.asarray(Image.open(buffer).convert("RGB"))
    if rng.random() < 0.5:
        out = np.clip(out.astype(np.float32) * rng.uniform(0.8, 1.2) + rng.uniform(-20, 20), 0, 255)
    return np.ascontiguousarray(out, dtype=np.uint8)


def logits_of(model: torch.nn.Module, crops: np.ndarray, spec) -> np.ndarray:  # type: ignore[no-untyped-def]
    model.eval()
    out = []
    with torch.inference_mode():
        for i in range(0, len(crops), 64):
            batch = torch.from_numpy(to_batch(list(crops[i : i + 64]), spec))
            out.append(model(batch.contiguous(memory_format=torch.channels_last)).squeeze(1).numpy())
    return np.concatenate(out)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--work", type=Path, default=Path("/tmp/dfd_provisional"))
    parser.add_argument("--out", type=Path, default=Path("models"))
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--calibrate-only", action="store_true",
                        help="re-fit temperature and threshold of the saved model on the validation crops")
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(2)
    args.work.mkdir(parents=True, exist_ok=True)
    spec = default_spec(ARCH, name="dfd-default-provisional")
    data = build_dataset(args.data, args.work / f"crops_{spec.input_size}.npz", spec.input_size)
    is_train = data["splits"] == "train"
    val = ~is_train
    x_train, y_train = data["crops"][is_train], data["labels"][is_train]
    x_val, y_val, src_val = data["crops"][val], data["labels"][val], data["sources"][val]
    print(f"train {len(y_train)} crops ({y_train.mean():.2f} fake), "
          f"val {len(y_val)} ({y_val.mean():.2f} fake)")

    if args.calibrate_only:
        from deepfake_detection.models.files import load_model_file

        model, _ = load_model_file(args.out / "default.safetensors")
        previous = json.loads((args.out / "default.metrics.json").read_text())
        best_auc, history = previous["val_auc"], previous["history"]
        model = model.to(memory_format=torch.channels_last)
    else:
        model, best_auc, history = train(args, spec, x_train, y_train, x_val, y_val)
    finish(args, model, spec, best_auc, history, x_val, y_val, src_val)


def train(args: argparse.Namespace, spec, x_train, y_train, x_val, y_val):  # type: ignore[no-untyped-def]
    model = create_model(ARCH, pretrained=True).to(memory_format=torch.channels_last)
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=1e-4)
    steps = args.epochs * (len(y_train) // args.batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=3e-4, total_steps=steps, pct_start=0.1)
    weights = np.where(y_train == 1, 0.5 / y_train.mean(), 0.5 / (1 - y_train.mean()))  # class balance
    rng = np.random.default_rng(0)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    best_auc, best_state, history = -1.0, None, []
    for epoch in range(args.epochs):
        model.train()
        order = rng.choice(len(y_train), size=len(y_train), p=weights / weights.sum())
        start, losses = time.time(), []
        for step in range(len(order) // args.batch_size):
            idx = order[step * args.batch_size : (step + 1) * args.batch_size]
            batch = torch.from_numpy(to_batch([augment(x_train[i], rng) for i in idx], spec))
            target = torch.from_numpy(y_train[idx].astype(np.float32))
            loss = loss_fn(model(batch.contiguous(memory_format=torch.channels_last)).squeeze(1), target)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            scheduler.step()
            losses.append(loss.item())
        val_logits = logits_of(model, x_val, spec)
        val_auc = auc(y_val, val_logits)
        history.append({"epoch": epoch + 1, "loss": float(np.mean(losses)), "val_auc": val_auc,
                        "seconds": round(time.time() - start, 1)})
        print(json.dumps(history[-1]), flush=True)
        if val_auc > best_auc:
            best_auc, best_state = val_auc, {k: v.clone() for k, v in model.state_dict().items()}
    assert best_state is not None
    model.load_state_dict(best_state)
    return model, best_auc, history


def finish(args, model, spec, best_auc, history, x_val, y_val, src_val):  # type: ignore[no-untyped-def]
    from dataclasses import replace

    val_logits = logits_of(model, x_val, spec)
    temperature = fit_temperature(val_logits, y_val)
    probs = 1 / (1 + np.exp(-val_logits / temperature))
    # Threshold on validation only, bounding false alarms on real faces at 5% (users' first
    # complaint is real photos called fake; ANCHORS.md).
    threshold = choose_threshold(probs, y_val, strategy="fpr", target_fpr=0.05)

    spec = replace(spec, temperature=round(temperature, 4), threshold=round(threshold, 4))
    report = {"val_auc": best_auc, "temperature": spec.temperature, "threshold": spec.threshold,
              "history": history}
    for source in sorted(set(src_val.tolist())):
        mask = src_val == source
        report[f"val_{source}_fake_rate_at_threshold"] = float((probs[mask] >= threshold).mean())
    ff_mask = np.char.startswith(src_val.astype(str), "ffpp")
    report["val_ffpp_auc"] = auc(y_val[ff_mask], val_logits[ff_mask])
    gan_mask = src_val == "gan"
    report["val_gan_auc"] = auc(y_val[gan_mask], val_logits[gan_mask])
    args.out.mkdir(exist_ok=True)
    weights_path = save_model(model.eval(), spec, args.out / "default.safetensors")
    onnx_path = export_onnx(model.eval(), spec, args.out / "default.onnx")
    report["onnx_parity_max_abs_diff"] = check_parity(model.eval(), onnx_path)
    for path in (weights_path, onnx_path):
        write_checksum(path)
    (args.out / "default.metrics.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
