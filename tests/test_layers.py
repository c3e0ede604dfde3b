"""The package's layering, read from the source: every import (module level or inside a
function) points down, the wheel installs `lrpilot` alone, and no module grows past ~400 lines."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {"lrpilot": "lrpilot", "checkpoints": "lrpilot.checkpoints", "trainers": "lrpilot.trainers",
           "collect": "lrpilot.collect", "worldmodel": "lrpilot.worldmodel", "policy": "lrpilot.policy", "app": "lrpilot.app"}
# lowest first; a module may import its own layer and the layers below it
LAYERS = ["kernel", "lrpilot.checkpoints", "lrpilot.trainers", "lrpilot.collect", "lrpilot.worldmodel", "lrpilot.policy",
          "lrpilot.app"]
STAGES = set(LAYERS[1:])


def layer(module: str) -> int:
    for i, name in enumerate(LAYERS[1:], start=1):
        if module == name or module.startswith(name + "."):
            return i
    return 0


def modules():
    for folder, package in FOLDERS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT / folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            yield ".".join([package, *parts]), path


def lrpilot_imports(path: Path, module: str) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] == "lrpilot"}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "lrpilot":
            for a in node.names:  # `from lrpilot import checkpoints` imports the module lrpilot.checkpoints
                out.add(f"{node.module}.{a.name}" if layer(f"{node.module}.{a.name}") else node.module)
    return out


def test_every_import_points_down():
    bad = []
    for module, path in modules():
        for imp in lrpilot_imports(path, module):
            if layer(imp) > layer(module):
                bad.append(f"{module} ({LAYERS[layer(module)]}) imports {imp} ({LAYERS[layer(imp)]})")
    assert not bad, "\n".join(bad)
    assert len(list(modules())) > 40  # the walk really saw the package


def test_the_kernel_imports_no_stage_even_lazily():
    kernel = [(m, p) for m, p in modules() if layer(m) == 0]
    assert {"lrpilot.spec", "lrpilot.trajectories", "lrpilot.driver", "lrpilot.controllers", "lrpilot.env"} <= {m for m, _ in kernel}
    for module, path in kernel:
        assert not {i for i in lrpilot_imports(path, module) if layer(i)}, module


def test_no_module_is_longer_than_about_400_lines():
    files = [p for _, p in modules()] + sorted((ROOT / "tests").glob("*.py")) + sorted((ROOT / "benchmarks").glob("*.py"))
    long = {str(p.relative_to(ROOT)): n for p in files if (n := len(p.read_text().splitlines())) > 420}
    assert not long, long


@pytest.mark.slow
def test_the_wheel_installs_lrpilot_alone(tmp_path):
    pytest.importorskip("setuptools")
    had_build = (ROOT / "build").exists()
    try:
        r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
                           capture_output=True, text=True, timeout=600)
    finally:
        if not had_build:  # setuptools builds in the source tree; leave it as it was
            shutil.rmtree(ROOT / "build", ignore_errors=True)
    if r.returncode != 0 and "No matching distribution" in r.stderr + r.stdout:
        pytest.skip("no index to fetch the build backend from")
    assert r.returncode == 0, r.stderr[-2000:]
    (wheel,) = tmp_path.glob("lrpilot-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith((".dist-info", ".data"))}
    assert top == {"lrpilot"}, top
    for sub in ("worldmodel/env.py", "policy/deploy.py", "collect/job.py", "trainers/charlm.py", "checkpoints/store.py",
                "app/cli.py", "checkpoints/pretrained/policy/checkpoint.json"):
        assert f"lrpilot/{sub}" in names, sub
    entry = [n for n in names if n.endswith("entry_points.txt")]
    text = zipfile.ZipFile(wheel).read(entry[0]).decode()
    assert "lrpilot = lrpilot.app.cli:main" in text and "policy = lrpilot.policy.deploy" in text
