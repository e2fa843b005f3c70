"""CPU runtime settings shared by every ONNX Runtime session (face detector and classifier)."""

from __future__ import annotations

import os
from typing import Any


def available_cores() -> int:
    """Cores this process may use (respects container CPU pinning, unlike os.cpu_count())."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        return os.cpu_count() or 1


def ort_session_options(threads: int | None = None) -> Any:
    """Session options for small CNNs on a shared CPU.

    No busy-waiting between ops: detector, classifier, decoding and cropping share the cores, and
    with spinning on, 2 ORT threads ran 2x slower than 1 when another thread was busy. One
    sequential graph (inter-op 1): these CNNs have no parallel branches worth a thread.
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(threads) if threads else available_cores()
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return opts
