"""Dataset layouts: one small module each, registered on import; auto-detection and iteration.

Auto-detection tries the most specific layouts first: ffpp, then celebdf / dfdc, then csv (a .csv file
given as the root), then folders (ROOT/real, ROOT/fake).
"""

from __future__ import annotations

from deepfake_detection.data.layouts import celebdf, csv_list, dfdc, ffpp, folders  # noqa: F401  (registers)
from deepfake_detection.data.layouts._registry import (
    Failure,
    FailureHandler,
    available_layouts,
    iter_sources,
    make_layout,
    register_layout,
    resolve_layout,
)

__all__ = [
    "Failure",
    "FailureHandler",
    "available_layouts",
    "iter_sources",
    "make_layout",
    "register_layout",
    "resolve_layout",
]
