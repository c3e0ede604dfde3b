"""The scripts beside the package (results/*/, benchmarks/) name only what lrpilot has: a rename in the package that
misses a script fails here, not when someone reruns the script to reproduce a table."""

from __future__ import annotations

import ast
import importlib
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(ROOT.glob("results/*/*.py")) + sorted(ROOT.glob("benchmarks/*.py"))


def lrpilot_names(source: str) -> tuple[list[tuple[str, str, int]], list[tuple[str, str, int]]]:
    """([(module, name, line)] of `from lrpilot.m import name`, [(target, attr, line)] of `alias.attr` where alias
    is bound by such an import or by `import lrpilot.m as alias`; target is the dotted path the alias stands for)."""
    tree = ast.parse(source)
    imported, aliases = [], {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "lrpilot":
            for a in node.names:
                imported.append((node.module, a.name, node.lineno))
                aliases[a.asname or a.name] = f"{node.module}.{a.name}"
        elif isinstance(node, ast.Import):
            aliases.update({a.asname: a.name for a in node.names if a.asname and a.name.split(".")[0] == "lrpilot"})
    reads = [(aliases[n.value.id], n.attr, n.lineno) for n in ast.walk(tree)
             if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id in aliases]
    return imported, reads


def resolve(dotted: str):
    """The module or the module's attribute that `dotted` names (ImportError / AttributeError if none)."""
    try:
        return importlib.import_module(dotted)
    except ModuleNotFoundError:
        module, _, name = dotted.rpartition(".")
        return getattr(importlib.import_module(module), name)


def missing(path: Path, root: Path = ROOT) -> list[str]:
    imported, reads = lrpilot_names(path.read_text())
    bad = []
    for module, name, line in imported:
        try:
            resolve(f"{module}.{name}")
        except (ImportError, AttributeError):
            bad.append(f"{path.relative_to(root)}:{line}: {module} has no {name}")
    for target, attr, line in reads:
        try:
            obj = resolve(target)
        except (ImportError, AttributeError):
            continue  # reported above
        if isinstance(obj, types.ModuleType) and not hasattr(obj, attr):  # a class's attributes may be per instance
            bad.append(f"{path.relative_to(root)}:{line}: {target} has no {attr}")
    return bad


def test_every_lrpilot_name_a_script_uses_exists():
    assert len(SCRIPTS) > 20  # the glob really saw the scripts
    bad = [b for p in SCRIPTS for b in missing(p)]
    assert not bad, "\n".join(bad)


def test_a_stale_name_is_caught(tmp_path):
    """The check itself: a private name that was made public (as fidelity._mean_se was) and a moved function."""
    script = tmp_path / "stale.py"
    script.write_text("from lrpilot.worldmodel import fidelity as fid\nfrom lrpilot.worldmodel.train import nothing_here\n"
                      "from lrpilot.worldmodel.model import WorldModelConfig\n"
                      "fid._mean_se([1.0])\nfid.mean_se([1.0])\nWorldModelConfig.anything\n")
    bad = [b.split(": ", 1)[1] for b in missing(script, tmp_path)]
    assert bad == ["lrpilot.worldmodel.train has no nothing_here", "lrpilot.worldmodel.fidelity has no _mean_se"]
