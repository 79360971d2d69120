"""Atomic writes: a write that fails is reported as such (WriteError, an OSError naming the
file), never as bad input, and leaves the file as it was."""

from __future__ import annotations

import errno
import os

import pytest

from neat_exporter.errors import InputError, NeatExporterError, WriteError
from neat_exporter.files import write_atomically


def test_a_missing_folder_is_a_write_error(tmp_path):
    target = tmp_path / "missing" / "report.json"
    with pytest.raises(WriteError, match=f"{target}: cannot write: No such file") as raised:
        write_atomically(target, lambda file: file.write(b"{}"))
    assert isinstance(raised.value, OSError) and isinstance(raised.value, NeatExporterError)
    assert not isinstance(raised.value, InputError)


def test_a_failed_write_keeps_the_old_file_and_names_it(tmp_path):
    target = tmp_path / "state.json"
    target.write_bytes(b"old")

    def disk_full(file):
        file.write(b"new, in part")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(WriteError, match=f"{target}: cannot write: No space left on device"):
        write_atomically(target, disk_full)
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["state.json"]  # no temporary file left behind


def test_other_failures_of_the_writer_pass_through_unchanged(tmp_path):
    def not_drawable(file):
        raise ValueError("not drawable")

    with pytest.raises(ValueError, match="not drawable"):
        write_atomically(tmp_path / "plot.png", not_drawable)
    assert os.listdir(tmp_path) == []


def test_a_name_that_is_no_file_name_is_bad_input(tmp_path):
    with pytest.raises(InputError, match="not a file name"):
        write_atomically(tmp_path / "..", lambda file: file.write(b""))
