"""File-system conditions the persistence tests need."""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

__all__ = ["damage_index", "read_only"]


@contextlib.contextmanager
def read_only(path: Path) -> Iterator[None]:
    """Make the file or directory `path` unwritable even for root (immutable), or skip."""
    if os.geteuid() != 0:
        mode = path.stat().st_mode
        path.chmod(0o555 if path.is_dir() else 0o444)
        try:
            yield
        finally:
            path.chmod(mode)
        return
    chattr = shutil.which("chattr")
    if chattr is None or subprocess.run([chattr, "+i", str(path)], check=False).returncode:
        pytest.skip("running as root and cannot make a file immutable (chattr +i)")
    try:
        yield
    finally:
        subprocess.run([chattr, "-i", str(path)], check=True)


def damage_index(path: Path, index: str = "sqlite_autoindex_retained_1") -> None:
    """Write garbage over the root page of `index` in the (closed) database at `path`.

    The start-up reads its tables by scanning them, not through this index, so the file
    opens and loads; only ``PRAGMA quick_check`` finds the damage.
    """
    db = sqlite3.connect(path)
    try:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # every page in the file itself
        page_size = db.execute("PRAGMA page_size").fetchone()[0]
        (root,) = db.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (index,))
    finally:
        db.close()
    with open(path, "r+b") as f:
        f.seek((root[0] - 1) * page_size)
        f.write(b"\xa5" * page_size)
