"""Turn what a user types (files, folders, globs) into an ordered list of inputs.

Folders are walked recursively and keep only files with an image extension (a README or a .DS_Store
next to photos is not an input). A file named explicitly is always an input, whatever its
extension, so a wrong-format file gets an `error` record instead of being skipped silently. A folder
that cannot be read (named, or met while walking) and a named path that cannot be reached (no
permission, a symbolic link loop, a broken link) become error records naming the path and the reason.
"""

from __future__ import annotations

import errno
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
    error: str | None = None  # why it cannot be read at all (an unreadable folder, a link loop, ...)

    @property
    def is_video(self) -> bool:
        return Path(self.path).suffix.lower() in VIDEO_EXTENSIONS


def os_error_text(exc: OSError, what: str = "cannot read") -> str:
    """`PermissionError: cannot read folder: Permission denied`: the kind, what failed and why."""
    if exc.errno == errno.ELOOP:
        return "OSError: a symbolic link loop (the link points back to itself)"
    reason = exc.strerror or str(exc)
    return f"{type(exc).__name__}: {what}: {reason}"


def _walk(folder: str) -> Iterator[InputItem]:
    """Image and video files under `folder`, sorted; each folder that cannot be listed is an error item
    (os.walk skips them silently without an onerror handler)."""
    failed: list[OSError] = []
    for root, dirs, files in os.walk(folder, onerror=failed.append):
        yield from _walk_errors(failed)
        dirs.sort()  # deterministic order
        for name in sorted(files):
            if Path(name).suffix.lower() in IMAGE_EXTENSIONS | VIDEO_EXTENSIONS:
                yield InputItem(os.path.join(root, name))
    yield from _walk_errors(failed)


def _walk_errors(failed: list[OSError]) -> Iterator[InputItem]:
    while failed:
        exc = failed.pop(0)
        yield InputItem(str(exc.filename), error=os_error_text(exc, "cannot read folder"))


def _unreachable(spec: str) -> str | None:
    """Why a path that os.path.exists calls missing cannot be read, when it is there after all."""
    try:
        os.stat(spec)
    except FileNotFoundError:
        if os.path.islink(spec):
            return "FileNotFoundError: a broken symbolic link (its target does not exist)"
        return None
    except OSError as exc:
        return os_error_text(exc, "cannot access")
    return None


def expand_inputs(specs: Sequence[str]) -> list[InputItem]:
    """Expand paths, folders (recursive) and globs, in the order given, without duplicates."""
    seen: set[str] = set()
    items: list[InputItem] = []

    def add(item: InputItem) -> None:
        key = os.path.abspath(item.path)
        if key not in seen:
            seen.add(key)
            items.append(item)

    for spec in specs:
        if os.path.isdir(spec):
            for item in _walk(spec):
                add(item)
        elif os.path.exists(spec):
            add(InputItem(spec))
        elif (reason := _unreachable(spec)) is not None:
            add(InputItem(spec, error=reason))
        elif _GLOB_CHARS & set(spec):
            matches = sorted(glob.glob(spec, recursive=True))
            for match in matches:
                if os.path.isdir(match):
                    for item in _walk(match):
                        add(item)
                else:
                    add(InputItem(match))
            if not matches:
                add(InputItem(spec, missing=True))
        else:
            add(InputItem(spec, missing=True))
    return items
