"""The history ring buffers and their on-disk form (Neat's local_data_directory format)."""

from __future__ import annotations

import os
from collections import deque

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from neat_exporter import neat_files
from neat_exporter.history import History
from neat_exporter.sources.base import Reading, VmReading

A, B = "a0000000-0000-4000-8000-000000000001", "b0000000-0000-4000-8000-000000000002"


def reading(vms: dict[str, float | None], busy: float | None) -> Reading:
    return Reading(
        time=0.0,
        host="h",
        cpu_cores=4,
        core_mhz=1000.0,
        host_busy_mhz=busy,
        vms={uuid: VmReading(uuid, mhz, 1024.0) for uuid, mhz in vms.items()},
    )


def test_record_keeps_the_newest_samples_and_the_overhead():
    history = History(3)
    history.record(reading({A: None}, None))  # first sight: no baseline, no sample
    assert history.vm_histories() == {}
    assert history.host_history() == []
    for mhz in (100, 200, 300, 400):
        history.record(reading({A: mhz, B: 50}, busy=mhz + 50 + 25))
    assert history.vm_histories() == {A: [200, 300, 400], B: [50, 50, 50]}
    assert history.host_history() == [25, 25, 25]
    history.record(reading({A: 10}, busy=5))  # overhead floored at 0; B left the host
    assert history.vm_histories() == {A: [300, 400, 10]}
    assert history.host_history() == [25, 25, 0]


def test_save_writes_neats_format_and_load_reads_it_back(tmp_path):
    history = History(100)
    for mhz in (100.7, 200.2, 300.0):
        history.record(reading({A: mhz, B: 7}, busy=mhz + 7 + 12.9))
    history.save(tmp_path)
    assert (tmp_path / "vms" / A).read_text() == "100\n200\n300\n"
    assert (tmp_path / "vms" / B).read_text() == "7\n7\n7\n"
    assert (tmp_path / "host").read_text() == "12\n12\n12\n"
    loaded = History.load(tmp_path, 2)
    assert loaded.vm_histories() == {A: [200, 300], B: [7, 7]}
    assert loaded.host_history() == [12, 12]
    assert loaded.dropped_lines == 0


def test_a_copy_is_independent():
    history = History(3)
    history.record(reading({A: 100}, busy=110))
    copy = history.copy()
    history.record(reading({A: 200, B: 5}, busy=215))
    assert copy.vm_histories() == {A: [100]} and copy.host_history() == [10]
    assert history.vm_histories() == {A: [100, 200], B: [5]}


def test_save_removes_the_files_of_vms_that_left(tmp_path):
    history = History(5)
    history.record(reading({A: 1, B: 2}, busy=3))
    history.save(tmp_path)
    history.record(reading({A: 1}, busy=3))
    history.save(tmp_path)
    assert sorted(p.name for p in (tmp_path / "vms").iterdir()) == [A]


def test_save_is_atomic(tmp_path, monkeypatch):
    history = History(5)
    history.record(reading({A: 100}, busy=100))
    history.save(tmp_path)
    history.record(reading({A: 200}, busy=200))

    def fail(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError):
        history.save(tmp_path)
    assert (tmp_path / "vms" / A).read_text() == "100\n"  # the old file, whole
    assert sorted(p.name for p in (tmp_path / "vms").iterdir()) == [A]  # no temporary left


def test_load_drops_and_counts_corrupt_lines(tmp_path):
    (tmp_path / "vms").mkdir()
    (tmp_path / "vms" / A).write_text("100\nabc\n200\n-5\nnan\n\n300\n")
    (tmp_path / "host").write_text("1\n2\x00\n3")
    history = History.load(tmp_path, 100)
    assert history.vm_histories() == {A: [100, 200, 300]}
    assert history.host_history() == [1, 3]
    assert history.dropped_lines == 4


def test_load_of_a_missing_directory_is_empty(tmp_path):
    history = History.load(tmp_path / "absent", 10)
    assert history.vm_histories() == {}
    assert history.host_history() == []


def test_load_skips_files_it_cannot_read(tmp_path, monkeypatch):
    (tmp_path / "vms").mkdir()
    (tmp_path / "vms" / A).write_text("100\n")
    (tmp_path / "vms" / B).write_text("200\n")
    read = neat_files.read_regular_file

    def unreadable_b(folder, name, limit):
        if name == B:  # tests run as root, for whom file modes do not forbid reading
            raise PermissionError(13, "Permission denied")
        return read(folder, name, limit)

    monkeypatch.setattr(neat_files, "read_regular_file", unreadable_b)
    history = History.load(tmp_path, 10)
    assert history.vm_histories() == {A: [100]}
    history.save(tmp_path)  # the next persist rewrites what could not be read
    assert not (tmp_path / "vms" / B).exists()


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.dictionaries(
            st.sampled_from("abcdef"),
            st.none() | st.floats(0, 1e6, allow_nan=False),
            max_size=6,
        ),
        min_size=1,
        max_size=12,
    ),
    st.integers(1, 4),
)
def test_record_keeps_each_vms_newest_samples_in_first_sample_order(collections, length):
    history = History(length)
    expected: dict[str, deque] = {}  # the plain model: a deque per VM
    for vms in collections:
        history.record(reading(vms, busy=None))
        expected = {uuid: values for uuid, values in expected.items() if uuid in vms}
        for uuid, mhz in vms.items():
            if mhz is not None:
                expected.setdefault(uuid, deque(maxlen=length)).append(mhz)
        histories = history.vm_histories()
        assert histories == {uuid: list(values) for uuid, values in expected.items()}
        assert list(histories) == list(expected)
        arrays = history.vm_arrays()
        assert {uuid: values.tolist() for uuid, values in arrays.items()} == histories
    history.record(reading({uuid: 1.0 for uuid in "abcdef"}, busy=None))
    assert {u: v.tolist() for u, v in arrays.items()} == histories  # a copy, not a view


# --- hostile history files ------------------------------------------------------------------------


def test_load_drops_values_a_host_cannot_have_and_numbers_in_other_notations(tmp_path):
    """1.5e308 made sums infinite, 99999999 MHz drove overload decisions, and float() also
    reads "1_000" and digits of other scripts."""
    (tmp_path / "vms").mkdir()
    lines = ["100", "1.5e308", "1e308", "99999999", "1_000", "\u0661\u0662\u0663", "inf", "4000"]
    (tmp_path / "vms" / A).write_text("\n".join(lines) + "\n200.5\n 300 \n")
    (tmp_path / "host").write_text("5\n4001\n")
    history = History.load(tmp_path, 100, ceiling_mhz=4000)
    assert history.vm_histories() == {A: [100, 4000, 200.5, 300]}
    assert history.host_history() == [5]
    assert history.dropped_lines == 7


def test_save_never_writes_what_load_cannot_read_back(tmp_path):
    history = History(3)
    history.record(reading({A: 1e308, B: 100.0}, busy=float("inf")))  # capacity 4000 MHz
    history.save(tmp_path)
    loaded = History.load(tmp_path, 3, ceiling_mhz=4000)
    assert loaded.dropped_lines == 0
    assert loaded.vm_histories() == {A: [4000], B: [100]}
    assert loaded.host_history() == [4000]


def test_save_through_planted_symlinks_writes_nothing_outside(tmp_path):
    """The temporary file had a predictable name (pid and thread) and was opened without
    O_EXCL or O_NOFOLLOW: a symlink planted there made the exporter write elsewhere."""
    import threading

    history_dir, outside = tmp_path / "history", tmp_path / "outside"
    outside.mkdir()
    victim = outside / "victim"
    victim.write_text("precious\n")
    (history_dir / "vms").mkdir(parents=True)
    suffix = f"{os.getpid()}-{threading.get_native_id()}"
    (history_dir / "vms" / f".{A}.{suffix}").symlink_to(victim)
    (history_dir / f".host.{suffix}").symlink_to(victim)
    (history_dir / "vms" / B).symlink_to(outside / "created-through-a-link")
    history = History(5)
    history.record(reading({A: 100, B: 200}, busy=400))
    history.save(history_dir)
    assert victim.read_text() == "precious\n"
    assert sorted(p.name for p in outside.iterdir()) == ["victim"]
    assert (history_dir / "vms" / A).read_text() == "100\n"
    assert not (history_dir / "vms" / B).is_symlink()  # the link itself was replaced


def test_a_vms_folder_that_is_a_symlink_is_not_followed(tmp_path):
    history_dir, outside = tmp_path / "history", tmp_path / "outside"
    outside.mkdir()
    history_dir.mkdir()
    (history_dir / "vms").symlink_to(outside)
    history = History(5)
    history.record(reading({A: 100}, busy=100))
    with pytest.raises((OSError, ValueError)):
        history.save(history_dir)
    assert list(outside.iterdir()) == []


@pytest.mark.parametrize("mode", [0o777, 0o1777, 0o757])
def test_a_history_dir_others_can_write_is_refused(tmp_path, mode):
    from neat_exporter.errors import InputError

    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(mode)
    history = History(5)
    history.record(reading({A: 100}, busy=100))
    with pytest.raises(InputError, match="others can write"):
        history.save(shared)
    assert not (shared / "vms").exists()
