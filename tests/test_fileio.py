"""Completion-marking outputs are written whole or not at all."""

import errno

import pytest

from tfdata import fileio


def _disk_full_after_half(real):
    def write(path, data):
        real(path, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device", path)
    return write


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "manifest.json"
    target.write_text('{"complete": true}')
    monkeypatch.setattr(fileio, "_write_file", _disk_full_after_half(fileio._write_file))
    with pytest.raises(OSError, match="No space left"):
        fileio.write_atomically(str(target), '{"complete": true, "more": [1, 2, 3]}')
    assert target.read_text() == '{"complete": true}' and [p.name for p in tmp_path.iterdir()] == ["manifest.json"]


def test_write_atomically_replaces_and_creates_the_directory(tmp_path):
    fileio.write_atomically(str(tmp_path / "new" / "a.json"), "1")
    fileio.write_atomically(str(tmp_path / "new" / "a.json"), b"2")
    assert (tmp_path / "new" / "a.json").read_text() == "2" and len(list((tmp_path / "new").iterdir())) == 1


def test_replace_directory_swaps_a_finished_directory_in(tmp_path):
    (tmp_path / "export").mkdir()
    (tmp_path / "export" / "old").write_text("old")
    tmp = fileio.temporary_sibling(str(tmp_path / "export"))
    (tmp_path / tmp.rsplit("/", 1)[1]).mkdir()
    (tmp_path / tmp.rsplit("/", 1)[1] / "new").write_text("new")
    fileio.replace_directory(tmp, str(tmp_path / "export"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]
    assert [p.name for p in (tmp_path / "export").iterdir()] == ["new"]
