"""Writing files so that a reader never sees half of one, and never through a planted link.

Files are written relative to a descriptor of their folder: a temporary file with an
unpredictable name, created exclusively (``O_EXCL``) and never through a symbolic link
(``O_NOFOLLOW``), then renamed over the target, which replaces a link planted there rather than
writing where it points. The exporter often runs as root; a folder others can write would let
them plant links or files, so :func:`private_directory` refuses one.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from neat_exporter.errors import InputError, WriteError

_DIRECTORY_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
TEMPORARY_PREFIX = "."
"""Temporary files are named ``.<name>.<random>``: readers of the folder skip dot files."""


def write_atomically(path: str | Path, write: Callable[[BinaryIO], None]) -> None:
    """Call ``write`` on a temporary file beside ``path``, then rename it over ``path``.

    A failure leaves ``path`` as it was; a path that cannot be written, or a write that fails
    (a full disk), raises WriteError naming ``path``. A process killed at any moment leaves
    ``path`` whole, old or new, and perhaps the temporary file (named ``.<name>.<random>``).
    Nothing is fsynced: after a power loss the file system may hold an older version, or on some
    file systems an empty file."""
    path = Path(path)
    try:
        folder = os.open(path.parent, _DIRECTORY_FLAGS)
    except OSError as error:
        raise _cannot_write(path, error) from None
    try:
        replace_file_at(folder, path.name, write, shown=str(path))
    finally:
        os.close(folder)


def replace_file_at(
    folder: int, name: str, write: Callable[[BinaryIO], None], shown: str | None = None
) -> None:
    """:func:`write_atomically` for ``name`` in the folder open as descriptor ``folder``."""
    shown = shown or name
    if not name or name in (".", "..") or "/" in name or "\0" in name:
        raise InputError(f"{shown!r}: not a file name")
    temporary = f"{TEMPORARY_PREFIX}{name}.{secrets.token_hex(8)}"
    try:
        handle = os.open(temporary, _NEW_FILE_FLAGS, 0o666, dir_fd=folder)  # mode as open() gives
    except OSError as error:
        raise _cannot_write(shown, error) from None
    try:
        with os.fdopen(handle, "wb") as file:
            write(file)
        os.replace(temporary, name, src_dir_fd=folder, dst_dir_fd=folder)
    except BaseException as error:
        with contextlib.suppress(OSError):
            os.unlink(temporary, dir_fd=folder)
        if isinstance(error, OSError) and not isinstance(error, WriteError):
            raise _cannot_write(shown, error) from None
        raise


def _cannot_write(path: str | Path, error: OSError) -> WriteError:
    return WriteError(f"{path}: cannot write: {error.strerror or error}")


@contextlib.contextmanager
def private_directory(path: str | os.PathLike) -> Iterator[int]:
    """A descriptor of the folder ``path``, created (mode 0755) if missing; WriteError when it
    cannot be, InputError when others can write it (see :func:`check_private`)."""
    path = Path(path)
    try:
        path.mkdir(mode=0o755, parents=True, exist_ok=True)
        folder = os.open(path, _DIRECTORY_FLAGS)
    except OSError as error:
        raise _cannot_write(path, error) from None
    try:
        check_private(os.fstat(folder), path)
        yield folder
    finally:
        os.close(folder)


@contextlib.contextmanager
def subdirectory(folder: int, name: str, *, create: bool) -> Iterator[int]:
    """A descriptor of the folder ``name`` inside ``folder``, never through a symbolic link
    (OSError ELOOP or ENOTDIR when ``name`` is one, or a file)."""
    if create:
        with contextlib.suppress(FileExistsError):
            os.mkdir(name, 0o755, dir_fd=folder)
    inner = os.open(name, _DIRECTORY_FLAGS | os.O_NOFOLLOW, dir_fd=folder)
    try:
        yield inner
    finally:
        os.close(inner)


def check_private(status: os.stat_result, path: str | os.PathLike) -> None:
    """InputError when users other than this process's (and root) can write the folder whose
    ``os.stat`` is ``status``: through links planted there, they could make this process write
    files elsewhere."""
    mode, uid = status.st_mode, status.st_uid
    others = bool(mode & stat.S_IWOTH)
    others |= bool(mode & stat.S_IWGRP) and status.st_gid != os.getegid()
    others |= uid not in (0, os.geteuid())
    if others:
        raise InputError(
            f"{path}: others can write this folder (mode {stat.filemode(mode)}, owner uid {uid}); "
            "make it writable by this user only, e.g. chmod go-w, and owned by it"
        )


def read_regular_file(folder: int, name: str, limit: int) -> bytes:
    """The regular file ``name`` in ``folder``, or its newest whole lines within ``limit``
    bytes; never through a symbolic link (OSError ELOOP) nor from a device or pipe (OSError)."""
    handle = os.open(
        name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=folder
    )
    try:
        status = os.fstat(handle)
        if not stat.S_ISREG(status.st_mode):
            raise OSError(0, "not a regular file", name)
        start = max(0, status.st_size - limit)
        data = os.pread(handle, limit, start)
    finally:
        os.close(handle)
    return data[data.find(b"\n") + 1 :] if start else data  # no partial first line
