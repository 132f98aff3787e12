"""Atomic file writes for perception's artifacts (DESIGN.md section 4): a temp file beside the target, fsync, rename.

(``policies.datasets.atomic`` has the same write; perception/ may not import policies/.)
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def atomic_write(path: Path, data: bytes) -> None:
    """Writes ``data`` to ``path`` through a hidden temp file renamed into place (readers never see half a file)."""
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
