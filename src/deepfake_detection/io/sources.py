"""Turn what a user types (files, folders, globs) into an ordered list of inputs.

Folders are walked recursively and keep only files with an image extension (a README or a .DS_Store
next to photos is not an input). A file named explicitly is always an input, whatever its
extension, so a wrong-format file gets an `error` record instead of being skipped silently.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from deepfake_detection.io.images import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS

_GLOB_CHARS = frozenset("*?[")


@dataclass(frozen=True)
class InputItem:
    """One input as the user will see it in the results (`path` as given or as found)."""

    path: str
    missing: bool = False  # named by the user but not found: reported as an error record

    @property
    def is_video(self) -> bool:
        return Path(self.path).suffix.lower() in VIDEO_EXTENSIONS


def _walk(folder: str) -> Iterator[str]:
    for root, dirs, files in os.walk(folder):
        dirs.sort()  # deterministic order
        for name in sorted(files):
            if Path(name).suffix.lower() in IMAGE_EXTENSIONS | VIDEO_EXTENSIONS:
                yield os.path.join(root, name)


def expand_inputs(specs: Sequence[str]) -> list[InputItem]:
    """Expand paths, folders (recursive) and globs, in the order given, without duplicates."""
    seen: set[str] = set()
    items: list[InputItem] = []

    def add(path: str, missing: bool = False) -> None:
        key = os.path.abspath(path)
        if key not in seen:
            seen.add(key)
            items.append(InputItem(path, missing))

    for spec in specs:
        if os.path.isdir(spec):
            for path in _walk(spec):
                add(path)
        elif os.path.exists(spec):
            add(spec)
        elif _GLOB_CHARS & set(spec):
            matches = sorted(glob.glob(spec, recursive=True))
            for match in matches:
                if os.path.isdir(match):
                    for path in _walk(match):
                        add(path)
                else:
                    add(match)
            if not matches:
                add(spec, missing=True)
        else:
            add(spec, missing=True)
    return items
