"""`celebdf`: Celeb-DF (v2 and v1).

    ROOT/Celeb-real/idX_NNNN.mp4  ROOT/Celeb-synthesis/idX_idY_NNNN.mp4  ROOT/YouTube-real/NNNNN.mp4
    ROOT/List_of_testing_videos.txt: "<label> <folder>/<file>" per line, label 1 = REAL, 0 = fake

Decisions:
* Group: connected components over celebrity ids (a synthesis clip links idX and idY), named by the
  smallest id ("celebdf:id0"); YouTube-real clips each their own group "celebdf:yt:NNNNN".
* official_split "test" for listed videos, "train" for the others (None for all without the list).
  The official test list shares celebrities with training, so group-aware splitting moves such
  identities wholly to test.
* Labels come from the folder; a list line that disagrees is logged, the folder wins.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path

from deepfake_detection.data.layouts._registry import Failure, UnionFind, register_layout, walk_files
from deepfake_detection.data.types import FAKE, REAL, SourceItem
from deepfake_detection.io.images import VIDEO_EXTENSIONS

log = logging.getLogger("deepfake_detection.data")

TEST_LIST = "List_of_testing_videos.txt"
_FOLDERS = (("Celeb-real", REAL), ("YouTube-real", REAL), ("Celeb-synthesis", FAKE))
_CELEB = re.compile(r"^(id\d+)_(?:(id\d+)_)?\d+$")
_YOUTUBE = re.compile(r"^\d+$")


class CelebDFLayout:
    name = "celebdf"

    def __init__(self) -> None:
        self.failures: list[Failure] = []

    def matches(self, root: Path) -> bool:
        return (root / "Celeb-real").is_dir() or (root / "Celeb-synthesis").is_dir()

    def items(self, root: Path) -> Iterator[SourceItem]:
        tested = self._test_list(root / TEST_LIST)
        uf = UnionFind()
        parsed = []
        for folder, label in _FOLDERS:
            for path in walk_files(root / folder, VIDEO_EXTENSIONS):
                stem = path.stem
                m = _CELEB.match(stem)
                if folder == "YouTube-real" and _YOUTUBE.match(stem):
                    ids = [f"yt:{stem}"]
                elif m and folder != "YouTube-real" and (m.group(2) is None) == (label == REAL):
                    ids = [g for g in m.groups() if g]
                else:
                    self.failures.append((str(path), f"name does not fit the {folder} naming of Celeb-DF"))
                    continue
                for i in ids:
                    uf.union(ids[0], i)
                parsed.append((path, folder, label, ids))
        base = root.resolve()
        for path, folder, label, ids in parsed:
            rel = f"{folder}/{path.relative_to(root / folder).as_posix()}"
            listed = tested.get(rel)
            if listed is not None and listed != label:
                log.warning("%s: test list says %s, folder says %s; using the folder", rel,
                            "real" if listed == REAL else "fake", "real" if label == REAL else "fake")
            yield SourceItem(
                path=str(base / rel), kind="video", label=label, dataset="celebdf",
                group=f"celebdf:{uf.find(ids[0])}", source_id=f"celebdf:{rel}",
                method="real" if label == REAL else "celebdf",
                official_split=("test" if listed is not None else "train") if tested else None,
            )

    def _test_list(self, path: Path) -> dict[str, int]:
        """Relative path -> label (0 real / 1 fake in OUR convention) of the official test videos."""
        out: dict[str, int] = {}
        if not path.is_file():
            return out
        for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 2 or parts[0] not in ("0", "1"):
                self.failures.append((f"{path}:{n}", "expected '<0|1> <folder>/<file>'"))
                continue
            out[parts[1].replace("\\", "/")] = REAL if parts[0] == "1" else FAKE  # in this list 1 = real
        return out


register_layout(
    "celebdf", CelebDFLayout, specificity=30,
    expects="Celeb-DF: ROOT/Celeb-real/, ROOT/Celeb-synthesis/, ROOT/YouTube-real/, "
    "optional ROOT/List_of_testing_videos.txt",
)
