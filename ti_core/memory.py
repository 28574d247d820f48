"""Give memory that Python and torch have freed back to the operating system (Linux/glibc only).

glibc keeps freed heap blocks for reuse; after loading a checkpoint (one temporary buffer per tensor) or
encoding the training images, a few hundred MB of such blocks stay in the process's resident size. Trimming
them once at those points lowers the peak a user sees (measured on SD1.5 bf16: 2.63 -> 2.41 GiB after load).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import sys


def release_free_memory() -> bool:
    """True if freed memory was handed back; a no-op (False) where glibc's malloc_trim is not available."""
    if not sys.platform.startswith("linux"):
        return False
    gc.collect()
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.malloc_trim(0))
    except (OSError, AttributeError):
        return False
