"""`ffpp`: FaceForensics++ as its download script lays it out.

    ROOT/original_sequences/<youtube|actors>/<compression>/videos/*.mp4
    ROOT/manipulated_sequences/<method>/<compression>/videos/*.mp4

Decisions:
* Identity groups are connected components over the ids in the file NAMES (union-find), never a path
  position: YouTube `XXX.mp4` is clip XXX, `XXX_YYY.mp4` is XXX with YYY's face (or YYY driving XXX),
  so XXX, YYY, XXX_YYY and YYY_XXX end in one group. DeepFakeDetection / actors: `01__scene.mp4` is
  actor 01; `01_02__scene__CODE.mp4` links actors 01 and 02. A group is named by its smallest id:
  "ffpp:000", "ffpp:actor01". Files whose names fit neither pattern are refused (reported).
* Compression: `compression=None` (default) takes c23 in each sequence folder that has it, and every
  compression found in folders that do not; "all" takes everything; "c40" etc. only that one.
* Official splits: train.json / val.json / test.json ([[id, id], ...]) in ROOT or ROOT/splits give a
  YouTube id its split; a file gets the split of its ids (the strictest, test > val > train, should two
  disagree). Actors sequences have no official split (None).
* Only `videos/` folders are read (not `masks/` or extracted `images/`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

from deepfake_detection.data.layouts._registry import Failure, UnionFind, register_layout, walk_files
from deepfake_detection.data.types import FAKE, REAL, SourceItem
from deepfake_detection.errors import DatasetError
from deepfake_detection.io.images import VIDEO_EXTENSIONS

_YT = re.compile(r"^(\d{3})(?:_(\d{3}))?$")
_ACTORS = re.compile(r"^(\d{2})(?:_(\d{2}))?__")
_SPLITS = ("train", "val", "test")
_STRICTNESS = {"train": 0, "val": 1, "test": 2}


class FFPPLayout:
    name = "ffpp"

    def __init__(self, compression: str | None = None) -> None:
        self.compression = compression
        self.failures: list[Failure] = []

    def matches(self, root: Path) -> bool:
        return (root / "original_sequences").is_dir() or (root / "manipulated_sequences").is_dir()

    def _compressions(self, seq: Path) -> list[Path]:
        found = sorted(p for p in seq.iterdir() if p.is_dir() and (p / "videos").is_dir())
        if self.compression == "all":
            return found
        want = self.compression or "c23"
        chosen = [p for p in found if p.name == want]
        return chosen if chosen or self.compression else found

    def _files(self, root: Path) -> list[tuple[Path, str, str, int]]:
        """(path, compression, method-or-source, label) for every video taken."""
        out = []
        for top, label in (("original_sequences", REAL), ("manipulated_sequences", FAKE)):
            if not (root / top).is_dir():
                continue
            for seq in sorted(p for p in (root / top).iterdir() if p.is_dir()):
                for comp in self._compressions(seq):
                    videos = walk_files(comp / "videos", VIDEO_EXTENSIONS)
                    out += [(f, comp.name, seq.name, label) for f in videos]
        return out

    def items(self, root: Path) -> Iterator[SourceItem]:
        base = root.resolve()
        split_of = _official_splits(root)
        parsed = []
        uf = UnionFind()
        for path, comp, seq, label in self._files(root):
            ids = _ids(path.stem)
            if ids is None:
                self.failures.append((str(path), "name fits neither XXX[_YYY].mp4 nor AA[_BB]__scene.mp4"))
                continue
            for i in ids:
                uf.union(ids[0], i)
            parsed.append((path, comp, seq, label, ids))
        for path, comp, seq, label, ids in parsed:
            splits = [split_of[i] for i in ids if i in split_of]
            yield SourceItem(
                path=str(base / path.relative_to(root)), kind="video", label=label, dataset="ffpp",
                group=f"ffpp:{uf.find(ids[0])}", source_id=f"ffpp:{comp}/{seq}/{path.stem}",
                method="real" if label == REAL else seq,
                official_split=max(splits, key=_STRICTNESS.__getitem__) if splits else None,
            )


def _ids(stem: str) -> list[str] | None:
    """Identity ids in a file name: YouTube clip ids as-is ("000"), actors as "actor01"."""
    m = _YT.match(stem)
    if m:
        return [g for g in m.groups() if g]
    m = _ACTORS.match(stem)
    if m:
        return [f"actor{g}" for g in m.groups() if g]
    return None


def _official_splits(root: Path) -> dict[str, str]:
    """YouTube id -> "train"/"val"/"test" from the official JSON lists, when present."""
    out: dict[str, str] = {}
    for split in _SPLITS:
        for folder in (root, root / "splits"):
            path = folder / f"{split}.json"
            if not path.is_file():
                continue
            try:
                pairs = json.loads(path.read_text(encoding="utf-8"))
                ids = [str(i).zfill(3) for pair in pairs for i in pair]  # ints lose zeros
            except (OSError, ValueError, TypeError) as e:
                raise DatasetError(f"{path}: not a FaceForensics++ list of [id, id] pairs ({e})") from None
            for i in ids:
                if _STRICTNESS[split] >= _STRICTNESS.get(out.get(i, "train"), 0):
                    out[i] = split
            break
    return out


register_layout(
    "ffpp", FFPPLayout, specificity=40,
    expects="FaceForensics++: ROOT/original_sequences/<youtube|actors>/<c23|c40|raw>/videos/*.mp4 and "
    "ROOT/manipulated_sequences/<method>/<compression>/videos/*.mp4, optional train/val/test.json",
)
