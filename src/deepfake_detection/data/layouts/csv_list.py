"""`csv`: a CSV listing file given as the root: header `path,label[,group][,method][,split][,dataset]`.

Decisions:
* label: 0/1, or real / fake / deepfake (any case). method: the column when given for a fake, else
  "unknown"; always "real" for label 0. split (optional): train/val/test -> official_split.
* Paths are relative to the CSV's folder. Security: by default (`allow_absolute=False`) absolute paths
  and paths that resolve outside that folder (via "..", or a symlink pointing out) are refused, so a
  dataset file cannot make us read arbitrary files. `allow_absolute=True` lifts the containment check.
* Dataset: the `dataset` column when given (letters, digits, `_`, `-`), else "csv"; reports break
  figures down by it, and splits balance each dataset.
* Group: "csv:<group>" when given, else the file's own group "csv:<path as written, no extension>".
* Rows keep the file's order. Each refused row is reported as a failure ("file.csv:LINE", why); a file
  without the required header is a DatasetError (nothing in it can be used).
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from deepfake_detection.data.layouts._registry import Failure, inside, media_kind, register_layout
from deepfake_detection.data.types import FAKE, REAL, SourceItem
from deepfake_detection.errors import DatasetError

_LABELS = {"0": REAL, "1": FAKE, "real": REAL, "fake": FAKE, "deepfake": FAKE}
_SPLITS = {"train", "val", "test"}
_DATASET_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


class CsvLayout:
    name = "csv"

    def __init__(self, allow_absolute: bool = False) -> None:
        self.allow_absolute = allow_absolute
        self.failures: list[Failure] = []

    def matches(self, root: Path) -> bool:
        return root.suffix.lower() == ".csv" and root.is_file()

    def items(self, root: Path) -> Iterator[SourceItem]:
        base = root.parent.resolve()
        try:
            with root.open(newline="", encoding="utf-8-sig") as f:
                reader = csv.reader(f)
                header = [h.strip().lower() for h in next(reader, [])]
                if "path" not in header or "label" not in header:
                    raise DatasetError(f"{root}: needs a header row with at least the columns path,label")
                rows = list(reader)
        except (OSError, UnicodeDecodeError, csv.Error) as e:
            raise DatasetError(f"{root}: cannot read CSV ({e})") from None
        for line, values in enumerate(rows, 2):
            if not any(v.strip() for v in values):
                continue
            row = {h: v.strip() for h, v in zip(header, values, strict=False)}
            item = self._item(root, base, row)
            if isinstance(item, str):
                self.failures.append((f"{root}:{line}", item))
            else:
                yield item

    def _item(self, root: Path, base: Path, row: dict[str, str]) -> SourceItem | str:
        """The row's item, or why it is refused."""
        raw, label = row.get("path", ""), _LABELS.get(row.get("label", "").lower())
        if not raw:
            return "empty path"
        if label is None:
            return f"label {row.get('label', '')!r} is not 0/1/real/fake/deepfake"
        written = Path(raw)
        if written.is_absolute() and not self.allow_absolute:
            return f"absolute path {raw!r} refused (allow_absolute is off)"
        path = written if written.is_absolute() else base / written
        if not self.allow_absolute and not inside(path, base):
            return f"path {raw!r} resolves outside {base}"
        try:
            resolved = path.resolve()
            ok = resolved.is_file()
        except (OSError, ValueError, RuntimeError) as e:
            return f"bad path {raw!r} ({e})"
        if not ok:
            return f"no such file: {raw!r}"
        kind = media_kind(resolved)
        if kind is None:
            return f"{raw!r} is neither an image nor a video (by extension)"
        split = row.get("split", "").lower()
        if split and split not in _SPLITS:
            return f"split {split!r} is not train/val/test"
        name = PurePosixPath(raw.replace("\\", "/")).as_posix()
        group = row.get("group") or str(PurePosixPath(name).with_suffix(""))
        dataset = row.get("dataset") or "csv"
        if not _DATASET_NAME.fullmatch(dataset):
            return f"dataset {dataset!r} must be letters, digits, '_' or '-'"
        return SourceItem(
            path=str(resolved), kind=kind, label=label, dataset=dataset, group=f"csv:{group}",
            source_id=f"csv:{root.stem}/{name}",
            method="real" if label == REAL else (row.get("method") or "unknown"),
            official_split=split or None,
        )


register_layout(
    "csv", CsvLayout, specificity=20,
    expects="a .csv file with header path,label[,group][,method][,split]; paths relative to its folder",
)
