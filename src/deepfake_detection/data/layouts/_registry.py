"""Registry of dataset layouts, auto-detection and the shared helpers of the layout modules."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from deepfake_detection.data.types import Kind, Layout, SourceItem
from deepfake_detection.errors import DatasetError
from deepfake_detection.io.images import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS

log = logging.getLogger("deepfake_detection.data")

Failure = tuple[str, str]  # (where: a path or "file:line", why)
FailureHandler = Callable[[str, str], None]


class _Entry:
    def __init__(self, factory: Callable[..., Layout], specificity: int, expects: str) -> None:
        self.factory, self.specificity, self.expects = factory, specificity, expects


_LAYOUTS: dict[str, _Entry] = {}


def register_layout(name: str, factory: Callable[..., Layout], *, specificity: int, expects: str) -> None:
    """Register a layout class; auto-detection tries higher `specificity` first."""
    _LAYOUTS[name] = _Entry(factory, specificity, expects)


def available_layouts() -> dict[str, str]:
    """Layout name -> what it expects, most specific first (the order auto-detection uses)."""
    entries = sorted(_LAYOUTS.items(), key=lambda kv: (-kv[1].specificity, kv[0]))
    return {name: e.expects for name, e in entries}


def make_layout(name: str, **options: Any) -> Layout:
    """A fresh instance of layout `name` with its options (e.g. compression="all" for ffpp)."""
    entry = _LAYOUTS.get(name)
    if entry is None:
        raise DatasetError(f"unknown dataset layout {name!r}; {_supported()}")
    try:
        return entry.factory(**options)
    except TypeError as e:
        raise DatasetError(f"bad options for layout {name!r}: {e}") from None


def _supported() -> str:
    lines = [f"  {name}: {expects}" for name, expects in available_layouts().items()]
    return "supported layouts:\n" + "\n".join(lines)


def resolve_layout(
    root: Path | str, name: str = "auto", options: Mapping[str, Mapping[str, Any]] | None = None
) -> Layout:
    """The layout of `root`: `name`, or with "auto" the most specific layout whose `matches` is true.

    `options` maps a layout name to its keyword options, so one call can configure every layout.
    """
    root = Path(root)
    opts = options or {}
    if not root.exists():
        raise DatasetError(f"{root}: no such file or folder")
    if name != "auto":
        layout = make_layout(name, **opts.get(name, {}))
        if not layout.matches(root):
            raise DatasetError(f"{root}: does not look like the {name!r} layout; {_supported()}")
        return layout
    for candidate in available_layouts():
        layout = make_layout(candidate, **opts.get(candidate, {}))
        if layout.matches(root):
            return layout
    raise DatasetError(f"{root}: unrecognised dataset layout; {_supported()}")


def _log_failure(where: str, why: str) -> None:
    log.warning("skipped %s: %s", where, why)


def iter_sources(
    roots: Sequence[Path | str],
    layout: str = "auto",
    *,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    on_failure: FailureHandler | None = None,
) -> Iterator[SourceItem]:
    """Every source item of every root, root by root, each root in its layout's order.

    Refused entries (bad CSV rows, path escapes, unparseable names) never stop the walk: they go to
    `on_failure(where, why)` (default: a logged warning). A file reached twice (overlapping roots) is
    yielded once; a source_id seen before for another file gets a "~N" suffix so ids stay unique.
    """
    report = on_failure or _log_failure
    seen_paths: set[str] = set()
    seen_ids: dict[str, int] = {}
    for root in roots:
        lay = resolve_layout(root, layout, options)
        failures: list[Failure] | None = getattr(lay, "failures", None)
        for item in lay.items(Path(root)):
            if failures:
                _flush(failures, report)
            if item.path in seen_paths:
                report(item.path, "listed twice (overlapping roots or rows); kept the first")
                continue
            seen_paths.add(item.path)
            n = seen_ids.get(item.source_id, 0)
            seen_ids[item.source_id] = n + 1
            if n:
                item = _replace_id(item, f"{item.source_id}~{n + 1}")
            yield item
        if failures:
            _flush(failures, report)


def _flush(failures: list[Failure], report: FailureHandler) -> None:
    while failures:
        report(*failures.pop(0))


def _replace_id(item: SourceItem, source_id: str) -> SourceItem:
    from dataclasses import replace

    return replace(item, source_id=source_id)


def media_kind(path: Path | str) -> Kind | None:
    """"image" / "video" by extension (case-insensitive), None for anything else."""
    ext = os.path.splitext(str(path))[1].lower()
    if ext in IMAGE_EXTENSIONS:
        return "image"
    if ext in VIDEO_EXTENSIONS:
        return "video"
    return None


def walk_files(top: Path, exts: frozenset[str] | None = None) -> list[Path]:
    """Sorted regular files under `top` (hidden entries skipped, symlinked folders not followed)."""
    out: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(top, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for f in filenames:
            if f.startswith(".") or (exts is not None and os.path.splitext(f)[1].lower() not in exts):
                continue
            out.append(Path(dirpath) / f)
    return sorted(out)


def inside(path: Path, base: Path) -> bool:
    """True when `path`, symlinks resolved, lies within `base` (already resolved)."""
    try:
        return path.resolve().is_relative_to(base)
    except (OSError, ValueError, RuntimeError):  # broken loops, NUL bytes
        return False


class UnionFind:
    """Connected components over string ids; a component is named by its smallest member."""

    def __init__(self) -> None:
        self._parent: dict[str, str] = {}

    def add(self, x: str) -> None:
        self._parent.setdefault(x, x)

    def find(self, x: str) -> str:
        self.add(x)
        root = x
        while self._parent[root] != root:
            root = self._parent[root]
        while self._parent[x] != root:  # path compression
            self._parent[x], x = root, self._parent[x]
        return root

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:  # the smaller id becomes the root, so names are deterministic
            lo, hi = sorted((ra, rb))
            self._parent[hi] = lo
