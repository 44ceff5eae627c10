"""The package's shape: a light import, no import cycles, layers that only import downwards, a complete wheel."""

from __future__ import annotations

import ast
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Source trees and the package names they install as (see setup.py).
TREES = {
    "cosmos3_world": ROOT / "cosmos3_world",
    "cosmos3_world.envs": ROOT / "envs",
    "cosmos3_world.policies": ROOT / "policies",
}

# Each area may import only areas of a lower or equal rank: the data path runs one way.
RANKS = {
    "kernels": 0, "sim": 0, "video": 0,
    "model": 1, "codecs": 1,
    "engine": 2,
    "testing": 3,
    "envs": 4, "training": 4, "judge": 4,
    "policies": 5,
    "serving": 6,
    "cli": 7,
}  # fmt: skip


def _modules() -> dict[str, Path]:
    """Every module of the installed package, by dotted name."""
    out = {}
    for package, tree in TREES.items():
        for path in tree.rglob("*.py"):
            parts = list(path.relative_to(tree).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join([package, *parts])] = path
    return out


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Every cosmos3_world module `name` imports anywhere (top level, functions, TYPE_CHECKING blocks)."""
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            targets = [module] + [f"{module}.{a.name}" for a in node.names]
        else:
            continue
        found |= {t for t in targets if t in known and t != name}
    return found


def _area(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_import_is_light_and_the_public_api_is_lazy():
    code = (
        "import sys, cosmos3_world\n"
        "heavy = [m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "from cosmos3_world import WorldModel, SamplerConfig\n"
        "assert WorldModel.__module__ == 'cosmos3_world.engine.world' and 'torch' in sys.modules\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    import cosmos3_world

    with pytest.raises(AttributeError, match="no attribute 'NoSuchThing'"):
        cosmos3_world.NoSuchThing  # noqa: B018
    assert set(cosmos3_world.__all__) <= set(dir(cosmos3_world))


def test_no_import_cycles_and_layers_import_only_downwards():
    modules = _modules()
    graph = {name: _imports(name, path, set(modules)) for name, path in modules.items()}
    # cycles: depth-first search over the module graph (function-local and type-only imports included)
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt) :] + [nxt]
                pytest.fail(f"import cycle: {' -> '.join(cycle)}")
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name)
    upward = [
        f"{a} imports {b}"
        for a, targets in graph.items()
        for b in targets
        if _area(a) in RANKS and _area(b) in RANKS and RANKS[_area(b)] > RANKS[_area(a)]
    ]
    assert not upward, upward
    unranked = sorted({_area(m) for m in modules} - set(RANKS) - {"__init__"})
    assert not unranked, f"give these areas a rank in RANKS: {unranked}"
    oracle = [a for a, targets in graph.items() if "cosmos3_world.testing.reference" in targets]
    assert all(_area(a) == "testing" for a in oracle), f"library code imports the test oracle: {oracle}"


def test_library_code_never_imports_the_tests_or_torch_in_the_simulator():
    for name, path in _modules().items():
        tree = ast.parse(path.read_text())
        names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        names |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and not n.level}
        assert not any(n == "tests" or n.startswith("tests.") for n in names), name
        if _area(name) == "sim":
            assert not names & {"torch", "diffusers", "transformers"}, f"{name} must stay numpy-only"


def test_the_wheel_ships_every_package(tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(ROOT),
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    (wheel,) = tmp_path.glob("cosmos3_world-*.whl")
    files = set(zipfile.ZipFile(wheel).namelist())
    packages = sorted(name for name, path in _modules().items() if path.name == "__init__.py")
    missing = [p for p in packages if p.replace(".", "/") + "/__init__.py" not in files]
    assert not missing, f"packages missing from the wheel: {missing}"
    assert not any(f.startswith(("tests/", "bench/", "envs/", "policies/")) for f in files)
