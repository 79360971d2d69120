"""Writing files so that a reader never sees half of one."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from neat_exporter.errors import InputError


def write_atomically(path: str | Path, write: Callable[[BinaryIO], None]) -> None:
    """Call ``write`` on a temporary file beside ``path``, then rename it over ``path``.

    A failure leaves ``path`` as it was; a path that cannot be written raises InputError. A
    process killed at any moment leaves ``path`` whole, old or new, and perhaps the temporary
    file (named ``.<name>.<...>``). Nothing is fsynced: after a power loss the file system may
    hold an older version, or on some file systems an empty file."""
    path = Path(path)
    # Unique among concurrent writers; a leftover of a killed process is overwritten (O_TRUNC).
    temporary = path.with_name(f".{path.name}.{os.getpid()}-{threading.get_native_id()}")
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
    try:
        handle = os.open(temporary, flags, 0o666)  # the mode a plain open() gives
    except OSError as error:
        raise InputError(f"{path}: cannot write: {error.strerror or error}") from None
    try:
        with os.fdopen(handle, "wb") as file:
            write(file)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
