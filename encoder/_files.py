"""File-system helpers shared by the package and ONNX writers."""

from __future__ import annotations

import os

__all__ = ["current_umask"]


def current_umask() -> int:
    """Return the process umask; reading it means setting it, so it is set back at once."""
    mask = os.umask(0)
    os.umask(mask)
    return mask
