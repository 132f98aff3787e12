"""Crash-safe file writes: write a hidden temp file beside the target, fsync it, then os.replace."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

TEMP_MARK = ".tmp-"


def temp_path_for(path: Path) -> Path:
    """Return a unique hidden temp path in ``path``'s directory (same filesystem, so rename is atomic)."""
    return path.parent / f".{path.name}{TEMP_MARK}{os.getpid()}-{secrets.token_hex(4)}"


def is_temp_file(path: Path) -> bool:
    """Tell whether ``path`` is a temp file left behind by :func:`atomic_path` (e.g. after a crash)."""
    return path.name.startswith(".") and TEMP_MARK in path.name


def fsync_file(path: Path) -> None:
    """Flush ``path``'s content to stable storage."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    """Flush directory ``path`` so that a rename inside it survives a power cut (no-op where unsupported)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def commit_temp(tmp: Path, path: Path) -> None:
    """fsync ``tmp``, atomically rename it onto ``path`` and fsync the directory."""
    fsync_file(tmp)
    os.replace(tmp, path)
    fsync_dir(path.parent)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temp path to write ``path``'s new content to; on clean exit it replaces ``path`` atomically.

    Readers see either the old file or the complete new one, never a partial write. The parent
    directory is created if missing. On an exception the temp file is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path_for(path)
    try:
        yield tmp
        commit_temp(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically and return the path."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    """Write ``obj`` as indented UTF-8 JSON (LeRobot's style: indent 4) to ``path`` atomically."""
    return atomic_write_bytes(path, json.dumps(obj, indent=4, ensure_ascii=False).encode("utf-8"))


def atomic_symlink(target: str | os.PathLike[str], link: str | os.PathLike[str]) -> Path:
    """Points the symlink ``link`` at ``target`` (made absolute), replacing an older link atomically.

    Raises:
        IsADirectoryError: ``link`` exists and is a real directory, not a link (it is left untouched).
    """
    link = Path(link)
    if link.is_dir() and not link.is_symlink():
        raise IsADirectoryError(f"cannot point {link} at {target}: it is a directory, not a symlink")
    link.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path_for(link)
    os.symlink(Path(target).resolve(), tmp, target_is_directory=True)
    try:
        os.replace(tmp, link)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    fsync_dir(link.parent)
    return link
