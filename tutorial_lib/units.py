"""One unit family for bytes: binary MiB and GiB (2^20 and 2^30 bytes) in every table and key.

A key says its unit in its name (`peak_rss_mib`, `peak_memory_bytes`); a table's column says it
in brackets ("peak memory (MiB)"). Decimal MB and GB are not used: a GPU sold as 24 GB holds
22.35 GiB, and mixing the two families is how a plan comes out 7 % short.
"""

from __future__ import annotations

MIB = 2**20
GIB = 2**30


def mib(n_bytes: float) -> float:
    """Bytes in MiB (2^20 bytes)."""
    return n_bytes / MIB


def gib(n_bytes: float) -> float:
    """Bytes in GiB (2^30 bytes)."""
    return n_bytes / GIB


def format_bytes(n_bytes: float, digits: int = 1) -> str:
    """A size as a reader wants it: "730.0 MiB" below 1 GiB, else "4.5 GiB"."""
    if n_bytes < 0:
        raise ValueError(f"a size in bytes cannot be negative, got {n_bytes}")
    if n_bytes < GIB:
        return f"{mib(n_bytes):.{digits}f} MiB"
    return f"{gib(n_bytes):.{digits}f} GiB"
