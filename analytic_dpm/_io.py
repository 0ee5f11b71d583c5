"""Atomic file writes shared by the resumable runs (Γ checkpoints, sample shards, feature statistics)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def atomic_savez(path, arrays: dict) -> Path:
    """``np.savez`` to ``path`` exactly (no ``.npz`` appended), via a temporary file in the same folder, fsync and
    ``os.replace``: a reader sees the old file or the new one, never a partial write."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path
