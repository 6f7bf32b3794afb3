"""Binder: the steps repo2docker runs from binder/, replayed in a fresh virtual environment.

repo2docker builds the conda environment of binder/environment.yml (Python and a CPU-only
torch), then runs binder/postBuild from the repository root, which installs the package and
prepares the model and lesson 06's 4-bit copy of it. Here a new venv with this machine's CPU build of torch stands in for the
conda environment (conda's channels are out of reach here), and postBuild runs as written, on a
copy of the repository, with an empty model cache; then the model must be ready (verified,
loadable, answering) without another download.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tutorial_lib.models import CACHE_ENV, DEFAULT_MODEL

ROOT = Path(__file__).resolve().parent.parent
BINDER = ROOT / "binder"
NEEDED = ("pyproject.toml", "README.md", "tutorial_lib", "data", "binder")

CHECK_READY = f"""
import json, torch, tutorial_lib
from importlib.metadata import distributions
from tutorial_lib.models import fetch_model, load_base_model, verify_converted
import tutorial_lib.models as models

def no_download(*args, **kwargs):
    raise AssertionError("the model should be ready: nothing may be fetched now")

models._download_wheel = no_download
folder = fetch_model({DEFAULT_MODEL!r})
from tutorial_lib import four_bit
four_bit.quantise_and_save = no_download  # lesson 06's 4-bit copy must be built already
four_bit_folder = four_bit.saved_four_bit({DEFAULT_MODEL!r})
model, tok = load_base_model({DEFAULT_MODEL!r}, device="cpu")
ids = tok("The capital of France is", return_tensors="pt")
out = model.generate(**ids, max_new_tokens=3, do_sample=False)
print(json.dumps({{
    "verified": verify_converted(folder),
    "folder": str(folder),
    "four_bit": str(four_bit_folder.parent),
    "package": tutorial_lib.__file__,
    "cuda_build": torch.version.cuda,
    "nvidia_packages": sorted(
        d.metadata["Name"] for d in distributions() if d.metadata["Name"].startswith("nvidia")
    ),
    "answer": tok.decode(out[0, ids["input_ids"].shape[1]:]),
}}))
"""


def test_binder_folder_has_what_repo2docker_reads():
    environment = (BINDER / "environment.yml").read_text()
    assert re.search(r"^\s*- conda-forge\s*$", environment, re.M)
    assert re.search(r"^\s*- python=3\.\d+\s*$", environment, re.M)
    assert re.search(r"^\s*- pytorch-cpu", environment, re.M), "a CPU-only build of torch"
    assert not (BINDER / "requirements.txt").exists(), "repo2docker would read it as well"
    post_build = BINDER / "postBuild"
    assert os.access(post_build, os.X_OK), "repo2docker runs postBuild only when executable"
    steps = post_build.read_text()
    assert "pip install --no-cache-dir -e ." in steps
    assert steps.index("pip install") < steps.index("tutorial-lib fetch-model")


def _copy_repository(dest: Path) -> None:
    """The files a Binder build uses, without this checkout's venvs and caches."""
    dest.mkdir()
    for name in NEEDED:
        src = ROOT / name
        if src.is_dir():
            ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
            shutil.copytree(src, dest / name, ignore=ignore)
        else:
            shutil.copy2(src, dest / name)


def _run(cmd: list, **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    assert done.returncode == 0, f"{cmd[:4]} failed:\n{done.stdout[-2000:]}{done.stderr[-3000:]}"
    return done


@pytest.mark.slow
def test_binder_steps_give_a_ready_model_in_a_fresh_environment(tmp_path):
    repo, venv, cache = tmp_path / "repo", tmp_path / "venv", tmp_path / "cache"
    _copy_repository(repo)
    base_python = getattr(sys, "_base_executable", sys.executable)
    _run([base_python, "-m", "venv", str(venv)])
    # --no-compile: byte-compiling every installed module costs minutes of CPU and changes
    # nothing checked here (Python compiles what it imports on first use instead).
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--no-compile"]
    _run([*pip, "torch==2.13.0"], timeout=600)  # stands in for environment.yml's CPU torch

    env = {
        **os.environ,
        "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}",
        "VIRTUAL_ENV": str(venv),
        CACHE_ENV: str(cache),
    }
    env.pop("PYTHONPATH", None)
    env["PIP_NO_COMPILE"] = "1"  # see above
    _run([str(repo / "binder" / "postBuild")], cwd=repo, env=env, timeout=1200)

    done = _run([str(venv / "bin" / "python"), "-c", CHECK_READY], cwd=tmp_path, env=env)
    ready = json.loads(done.stdout.strip().splitlines()[-1])
    assert ready["verified"] and ready["folder"] == str(cache / "models" / DEFAULT_MODEL)
    assert ready["four_bit"] == str(cache / "four-bit")  # built by postBuild, not by lesson 06
    assert ready["package"] == str(repo / "tutorial_lib" / "__init__.py")  # the editable clone
    assert ready["cuda_build"] is None and ready["nvidia_packages"] == []  # CPU only, no CUDA
    assert "Paris" in ready["answer"]
