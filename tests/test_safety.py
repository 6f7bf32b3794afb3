"""Safety promises (SECURITY.md), checked in the source so a change that breaks one fails CI."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCES = sorted((ROOT / "tutorial_lib").rglob("*.py"))
FORBIDDEN_CALLS = {"eval", "exec", "compile", "__import__"}
FORBIDDEN_MODULES = {"pickle", "cPickle", "dill", "marshal", "shelve", "joblib"}


def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
            yield name, node


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_pickles_no_remote_code_no_string_evaluation(path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for name, call in _calls(tree):
        keywords = {k.arg: k.value for k in call.keywords}
        if isinstance(call.func, ast.Name):  # model.eval() is a method, not the builtin
            assert name not in FORBIDDEN_CALLS, f"{path.name}:{call.lineno} calls {name}()"
        if name == "load" and isinstance(call.func, ast.Attribute):
            owner = getattr(call.func.value, "id", "")
            if owner == "torch":
                flag = keywords.get("weights_only")
                assert isinstance(flag, ast.Constant) and flag.value is True, (
                    f"{path.name}:{call.lineno} torch.load without weights_only=True"
                )
        remote = keywords.get("trust_remote_code")
        assert not (isinstance(remote, ast.Constant) and remote.value is True), (
            f"{path.name}:{call.lineno} passes trust_remote_code=True"
        )
        if name == "from_pretrained" and "gguf_file" not in keywords:
            flag = keywords.get("use_safetensors")
            is_tokenizer = "Tokenizer" in ast.unparse(call.func)
            assert is_tokenizer or (isinstance(flag, ast.Constant) and flag.value is True), (
                f"{path.name}:{call.lineno} loads weights without use_safetensors=True"
            )
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module]
            assert not FORBIDDEN_MODULES & {n.split(".")[0] for n in names if n}, (
                f"{path.name}:{node.lineno} imports a pickle-like module"
            )


def test_the_audit_catches_a_violation(tmp_path):
    """The checker itself must fail on the patterns it promises to catch."""
    bad = "import torch\nm = torch.load('x.bin')\nAutoModel.from_pretrained('x', trust_remote_code=True)\n"
    tree = ast.parse(bad)
    names = [name for name, _ in _calls(tree)]
    assert "load" in names and "from_pretrained" in names
    call = next(c for n, c in _calls(tree) if n == "from_pretrained")
    assert any(k.arg == "trust_remote_code" and k.value.value is True for k in call.keywords)
