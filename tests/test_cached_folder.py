"""The one cache mechanism behind the converted model, the published data and the 4-bit copy."""

from __future__ import annotations

import json

import pytest

from tutorial_lib import cached_folder


def _builder(calls: list, text: str = "weights"):
    def build(staged):
        calls.append(staged)
        (staged / "sub").mkdir(parents=True)
        (staged / "model.bin").write_text(text)
        (staged / "sub" / "data.arrow").write_text("rows")

    return build


def test_a_folder_is_built_once_and_its_manifest_lists_every_file_with_its_fields(tmp_path):
    calls = []
    folder = tmp_path / "cache" / "thing"
    assert cached_folder.build_once(folder, _builder(calls), version=1) == folder
    assert cached_folder.build_once(folder, _builder(calls), version=1) == folder
    assert len(calls) == 1
    manifest = json.loads((folder / cached_folder.MANIFEST).read_text())
    assert manifest["version"] == 1
    assert set(manifest["sha256"]) == {"model.bin", "sub/data.arrow"}
    assert [p.name for p in folder.parent.iterdir() if p.name.startswith("tmp")] == []


def test_other_fields_a_damaged_file_or_a_missing_folder_rebuild_it(tmp_path):
    calls = []
    folder = tmp_path / "thing"
    cached_folder.build_once(folder, _builder(calls), version=1)
    cached_folder.build_once(folder, _builder(calls), version=2)  # other settings: never reused
    assert len(calls) == 2 and cached_folder.matches(folder, version=2)
    assert not cached_folder.matches(folder, version=1)
    (folder / "sub" / "data.arrow").write_text("Rows")  # same size, other bytes
    assert not cached_folder.matches(folder, version=2)
    cached_folder.build_once(folder, _builder(calls), version=2)
    assert len(calls) == 3 and (folder / "sub" / "data.arrow").read_text() == "rows"
    assert cached_folder.matches(folder, holds=["sub"], version=2)
    assert not cached_folder.matches(folder, holds=["sub", "other"], version=2)
    cached_folder.build_once(folder, _builder(calls), holds=["sub"], version=2)
    assert len(calls) == 3  # every required folder is listed: reused
    cached_folder.build_once(folder, _builder(calls), holds=["other"], version=2)
    assert len(calls) == 4  # a copy that lacks a folder a reader needs is rebuilt


def test_a_build_that_fails_leaves_the_old_copy_and_no_scratch(tmp_path):
    folder = tmp_path / "thing"
    cached_folder.build_once(folder, _builder([]), version=1)

    def broken(staged):
        staged.mkdir()
        (staged / "model.bin").write_text("half")
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError, match="interrupted"):
        cached_folder.build_once(folder, broken, version=2)
    assert cached_folder.matches(folder, version=1)  # the old copy is untouched
    assert (folder / "model.bin").read_text() == "weights"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["thing", "thing.lock"]


def test_a_missing_or_unreadable_manifest_is_no_match(tmp_path):
    assert not cached_folder.matches(tmp_path / "absent")
    (tmp_path / cached_folder.MANIFEST).write_text("not json")
    assert not cached_folder.matches(tmp_path)
    (tmp_path / cached_folder.MANIFEST).write_text(json.dumps({"sha256": {}}))
    assert not cached_folder.matches(tmp_path)  # lists nothing: no copy at all
