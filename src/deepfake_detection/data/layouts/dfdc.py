"""`dfdc`: the DeepFake Detection Challenge training parts.

    ROOT/<part>/metadata.json + *.mp4   (or ROOT itself is one part)
    metadata.json: {"abc.mp4": {"label": "FAKE"|"REAL", "original": "xyz.mp4"|null, "split": "train"}}

Decisions:
* Group: connected components over (file, original) pairs across ALL parts (an original may sit in
  another part); a real clip is its own original. Named by the smallest file stem: "dfdc:<stem>".
* Method "dfdc" for fakes (the challenge does not say which method made a clip).
* official_split: the metadata's "split" only when the parts carry at least two different values among
  train/val/test; the training parts say "train" for every clip, which would leave nothing to validate on.
* Listed files that are missing, files not listed, non-plain names (separators, "..") and unreadable
  metadata.json files are reported as failures and skipped; the rest of the dataset goes on.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from deepfake_detection.data.layouts._registry import Failure, UnionFind, media_kind, register_layout
from deepfake_detection.data.types import FAKE, REAL, SourceItem

META = "metadata.json"
_LABELS = {"REAL": REAL, "FAKE": FAKE}
_SPLITS = {"train", "val", "test"}


class DFDCLayout:
    name = "dfdc"

    def __init__(self) -> None:
        self.failures: list[Failure] = []

    def _parts(self, root: Path) -> list[Path]:
        if (root / META).is_file():
            return [root]
        if not root.is_dir():
            return []
        return sorted(p for p in root.iterdir() if p.is_dir() and (p / META).is_file())

    def matches(self, root: Path) -> bool:
        return bool(self._parts(root))

    def items(self, root: Path) -> Iterator[SourceItem]:
        rows: list[tuple[Path, str, int, str | None]] = []  # (file, stem, label, split)
        uf = UnionFind()
        for part in self._parts(root):
            meta = self._read(part / META)
            present = {p.name for p in part.iterdir() if p.is_file() and media_kind(p) == "video"}
            for name in sorted(meta):
                entry = meta[name]
                where = f"{part / META}:{name}"
                if not _plain(name) or not isinstance(entry, dict):
                    self.failures.append((where, "not a plain file name with an entry object"))
                    continue
                label = _LABELS.get(str(entry.get("label", "")).upper())
                if label is None:
                    self.failures.append((where, f"label {entry.get('label')!r} is not REAL or FAKE"))
                    continue
                if name not in present:
                    self.failures.append((str(part / name), "listed in metadata.json but missing"))
                    continue
                original = entry.get("original")
                stem = Path(name).stem
                uf.add(stem)
                if label == FAKE and isinstance(original, str) and _plain(original):
                    uf.union(stem, Path(original).stem)
                split = entry.get("split")
                rows.append((part / name, stem, label, split if split in _SPLITS else None))
            for name in sorted(present - set(meta)):
                self.failures.append((str(part / name), "not listed in metadata.json"))
        use_split = len({r[3] for r in rows if r[3]}) >= 2
        base = root.resolve()
        for path, stem, label, split in rows:
            yield SourceItem(
                path=str(base / path.relative_to(root)), kind="video", label=label, dataset="dfdc",
                group=f"dfdc:{uf.find(stem)}", source_id=f"dfdc:{stem}",
                method="real" if label == REAL else "dfdc", official_split=split if use_split else None,
            )

    def _read(self, path: Path) -> dict[str, Any]:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            self.failures.append((str(path), f"unreadable metadata ({e}); part skipped"))
            return {}
        if not isinstance(data, dict):
            self.failures.append((str(path), "metadata is not a JSON object; part skipped"))
            return {}
        return data


def _plain(name: str) -> bool:
    """A bare file name: no folders, no "..", so metadata can only point inside its part."""
    return bool(name) and name not in (".", "..") and not any(c in name for c in "/\\\0")


register_layout(
    "dfdc", DFDCLayout, specificity=30,
    expects="DFDC: ROOT/<part>/metadata.json with the part's *.mp4 (or ROOT/metadata.json)",
)
