"""`folders`: ROOT/real/** and ROOT/deepfake/** (or fake/), images and videos mixed.

Decisions:
* Class folders are matched case-insensitively: `real` -> label 0; `deepfake` and `fake` -> label 1.
* Method: "real" / "unknown". Sub-folders under a fake folder are NOT taken as method names by default
  (people also sort by person or batch); pass `method_from_subfolder=True` to use the first one.
* Group (the unit of splitting): for a video its file stem; for an image its path relative to the class
  folder (the method folder with method_from_subfolder) without extension. So `real/abc.jpg` and
  `fake/abc.png` (a fake made from that real) share a group, and other images are their own group.
  A ROOT/groups.csv with columns path,group (paths relative to ROOT) overrides both.
* Symlinked files that resolve outside ROOT are refused; symlinked folders are not followed.
  Works for already-cropped face images too: nothing here depends on the picture.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from deepfake_detection.data.layouts._registry import Failure, inside, media_kind, register_layout, walk_files
from deepfake_detection.data.types import FAKE, REAL, SourceItem
from deepfake_detection.errors import DatasetError

_CLASS_DIRS = {"real": REAL, "deepfake": FAKE, "fake": FAKE}
GROUPS_FILE = "groups.csv"


class FoldersLayout:
    name = "folders"

    def __init__(self, method_from_subfolder: bool = False) -> None:
        self.method_from_subfolder = method_from_subfolder
        self.failures: list[Failure] = []

    def _class_dirs(self, root: Path) -> list[tuple[Path, int]]:
        if not root.is_dir():
            return []
        found = [(p, _CLASS_DIRS[p.name.lower()]) for p in root.iterdir()
                 if p.name.lower() in _CLASS_DIRS and p.is_dir()]
        return sorted(found, key=lambda t: (t[1], t[0].name))

    def matches(self, root: Path) -> bool:
        return bool(self._class_dirs(root))

    def items(self, root: Path) -> Iterator[SourceItem]:
        base = root.resolve()
        groups = _read_groups(root / GROUPS_FILE)
        for class_dir, label in self._class_dirs(root):
            for path in walk_files(class_dir):
                kind = media_kind(path)
                if kind is None:
                    continue  # text files, thumbnails databases, ...
                if path.is_symlink() and not inside(path, base):
                    self.failures.append((str(path), f"symlink resolves outside {root}"))
                    continue
                rel = PurePosixPath(path.relative_to(class_dir).as_posix())
                method = "real" if label == REAL else "unknown"
                if label == FAKE and self.method_from_subfolder and len(rel.parts) > 1:
                    method, rel = rel.parts[0], PurePosixPath(*rel.parts[1:])
                root_rel = path.relative_to(root).as_posix()
                group = groups.get(root_rel) or (path.stem if kind == "video" else str(rel.with_suffix("")))
                yield SourceItem(
                    path=str(base / root_rel), kind=kind, label=label, dataset="folder",
                    group=f"folder:{group}", source_id=f"folder:{root.name}/{root_rel}", method=method,
                )


def _read_groups(path: Path) -> dict[str, str]:
    """groups.csv: path (relative to ROOT, / separators) -> group name."""
    if not path.is_file():
        return {}
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            if not reader.fieldnames or not {"path", "group"} <= {c.strip() for c in reader.fieldnames}:
                raise DatasetError(f"{path}: needs a header with columns path,group")
            out = {}
            for row in reader:
                row = {(k or "").strip(): (v or "").strip() for k, v in row.items()}
                if row["path"] and row["group"]:
                    out[PurePosixPath(row["path"].replace("\\", "/")).as_posix()] = row["group"]
            return out
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DatasetError(f"{path}: cannot read ({e})") from None


register_layout(
    "folders", FoldersLayout, specificity=10,
    expects="ROOT/real/** and ROOT/deepfake/** (or fake/): images and videos, optional ROOT/groups.csv",
)
