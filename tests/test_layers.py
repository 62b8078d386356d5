"""The layers import one way only: face -> runtime -> engine -> export -> model -> base.

Every `import` in the package's source, at module level or inside a function, is an edge
between two folders. A folder may import itself and any folder of a lower rank, nothing else;
`benchmarks`, `training` and `calibration` sit beside the face (the face may use them, they may
not use the face or each other). docs/architecture.md §1 explains the layers.

`python tests/test_layers.py [ROOT]` prints the folder graph of a checkout (default: this one).
"""
from __future__ import annotations

import ast
import sys
import tomllib
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Folder (layer) -> rank. A folder may import folders of a lower rank only.
RANK = {"base": 0, "model": 1, "export": 2, "engine": 3, "runtime": 4,
        "benchmarks": 5, "training": 5, "calibration": 5, "face": 6}


def layer_of(module: str) -> str | None:
    """`dainrt.engine.runner` -> `engine`; the package itself, `api`, `cli`, `commands` -> `face`."""
    parts = module.split(".")
    if parts[0] != "dainrt":
        return None
    if len(parts) > 1 and parts[1] in RANK:
        return parts[1]
    return "face"


def source_modules(root: Path) -> dict[str, Path]:
    """Module name -> file, for every .py file of the `dainrt` packages (pyproject's package-dir)."""
    config = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = dict(config["package-dir"])
    for package in sorted(config.get("packages", []), key=len):     # sub-packages not in package-dir
        if package not in folders:
            parent, _, leaf = package.rpartition(".")
            folders[package] = f"{folders[parent]}/{leaf}"
    modules = {}
    for package, folder in folders.items():
        for path in sorted((root / folder).glob("*.py")):
            name = package if path.stem == "__init__" else f"{package}.{path.stem}"
            modules[name] = path
    return modules


def imports_of(module: str, path: Path) -> list[str]:
    """Every `dainrt...` module `path` imports (relative imports resolved), in source order."""
    package = module if path.stem == "__init__" else module.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.append(target)
    return [m for m in found if m == "dainrt" or m.startswith("dainrt.")]


def edges(root: Path = ROOT) -> Counter:
    """(from folder, to folder) -> number of import statements, over the whole package."""
    graph: Counter = Counter()
    for module, path in source_modules(root).items():
        for target in imports_of(module, path):
            graph[(layer_of(module), layer_of(target))] += 1
    return graph


def violations(root: Path = ROOT) -> list[str]:
    """`file: module imports target (from -> to)` for every import that points the wrong way."""
    bad = []
    for module, path in source_modules(root).items():
        src = layer_of(module)
        for target in imports_of(module, path):
            dst = layer_of(target)
            if dst != src and RANK[dst] >= RANK[src]:
                bad.append(f"{path.relative_to(root)}: imports {target} ({src} -> {dst})")
    return bad


def format_graph(graph: Counter) -> str:
    lines = []
    for (src, dst), n in sorted(graph.items(), key=lambda e: (-RANK[e[0][0]], -RANK[e[0][1]])):
        if src == dst:
            continue
        mark = "" if RANK[dst] < RANK[src] else "   <-- wrong way"
        lines.append(f"{src:>11} -> {dst:<11} {n:3d}{mark}")
    return "\n".join(lines)


def test_every_folder_is_a_known_layer():
    assert {layer_of(m) for m in source_modules(ROOT)} <= set(RANK)


def test_imports_point_down_only():
    bad = violations(ROOT)
    assert not bad, "imports pointing the wrong way:\n" + "\n".join(bad) + "\n\n" + format_graph(edges(ROOT))


def test_the_checker_sees_a_wrong_way_import(tmp_path):
    """The check itself can fail: a model module importing the runtime is caught."""
    (tmp_path / "model").mkdir()
    (tmp_path / "runtime").mkdir()
    (tmp_path / "pyproject.toml").write_text(
        '[tool.setuptools]\npackage-dir = {"dainrt.model" = "model", "dainrt.runtime" = "runtime"}\n')
    (tmp_path / "model" / "dain.py").write_text("def f():\n    from dainrt.runtime import run\n")
    (tmp_path / "runtime" / "pipeline.py").write_text("from ..model import dain\n")
    assert violations(tmp_path) == ["model/dain.py: imports dainrt.runtime (model -> runtime)"]
    assert edges(tmp_path) == Counter({("model", "runtime"): 1, ("runtime", "model"): 1})


if __name__ == "__main__":
    root = Path(sys.argv[1]).resolve() if len(sys.argv) > 1 else ROOT
    print(format_graph(edges(root)))
    bad = violations(root)
    print(f"\n{len(bad)} imports point the wrong way" + (":\n" + "\n".join(bad) if bad else ""))
