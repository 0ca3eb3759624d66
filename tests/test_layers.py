"""The package's layering, read from the source (docs/design.md, "Layers"): imports only go down,
no module imports itself through a loop, and the pure core imports no framework and no file I/O.

Every `import` and `from ... import` statement counts, including those inside functions (lazy
imports): a lazy import that goes up is still a dependency that goes up.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Import name -> folder, as pyproject.toml's package-dir maps them.
PACKAGES = {"waveinit": ROOT / "wave", "waveinit.cli": ROOT / "cli"}

# From the bottom up. A module may import modules of its own layer or of layers below it.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("core", ("waveinit.errors", "waveinit.spec", "waveinit.keys", "waveinit.kron", "waveinit.learngene", "waveinit.selection",
              "waveinit.mimetic", "waveinit.tleg", "waveinit.spawning", "waveinit.configs", "waveinit.flops")),
    ("io", ("waveinit.io",)),
    ("backends", ("waveinit.backends",)),
    ("training", ("waveinit.training",)),
    ("tasks", ("waveinit.tasks",)),
    ("api", ("waveinit.api", "waveinit.sizes", "waveinit.family")),
    ("bench", ("waveinit.bench",)),
    ("cli", ("waveinit.cli",)),
]
# Third-party and standard-library modules the pure core must not import: it is array-API math
# that other frameworks embed, without a deep-learning framework, a UI or any file access.
CORE_FORBIDDEN = ("torch", "typer", "click", "rich", "safetensors", "PIL", "sklearn", "matplotlib", "jax",
                  "os", "pathlib", "shutil", "tempfile", "gzip", "io", "json")
# Modules that must work without torch installed (transitively, lazy imports included).
TORCH_FREE = ("waveinit.io", "waveinit.bench.config", "waveinit.bench.records", "waveinit.bench.report", "waveinit.bench.markdown",
              "waveinit.bench.files", "waveinit.bench.plots")


def module_files() -> dict[str, Path]:
    """Import name -> source file of every module of the package."""
    modules = {}
    for package, folder in PACKAGES.items():
        for path in sorted(folder.rglob("*.py")):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join([package, *parts])] = path
    return modules


def imports_of(name: str, path: Path) -> set[str]:
    """Absolute names of everything `path` imports, anywhere in the file."""
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)  # `from pkg import module`
    return found


def graph() -> dict[str, set[str]]:
    """Module -> the package's own modules it imports (a `from x import name` counts as x)."""
    modules = module_files()
    edges = {}
    for name, path in modules.items():
        edges[name] = {m for m in imports_of(name, path) if m in modules and m != name}
    return edges


def layer_of(module: str) -> int:
    if module == "waveinit":  # the package face: it hands on names lazily and sits on top
        return len(LAYERS) - 1
    for index, (_, prefixes) in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return index
    raise AssertionError(f"{module} belongs to no layer: add it to LAYERS and to docs/design.md")


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_the_walker_sees_lazy_and_relative_imports(tmp_path):
    source = tmp_path / "mod.py"
    source.write_text("from .spec import ViTSpec\nfrom . import kron\n\ndef f():\n    from ..tasks import train\n    import torch\n")
    found = imports_of("waveinit.io.mod", source)
    assert {"waveinit.io.spec", "waveinit.io.kron", "waveinit.tasks", "torch"} <= found


def test_cycle_finder_finds_a_planted_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_every_module_has_a_layer_and_a_docstring():
    for name, path in module_files().items():
        layer_of(name)
        tree = ast.parse(path.read_text())
        if path.name != "__main__.py":
            assert ast.get_docstring(tree), f"{path} has no module docstring saying what it is for"


def test_no_import_cycles():
    cycle = find_cycle(graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_imports_only_go_down():
    upward = [
        f"{module} ({LAYERS[layer_of(module)][0]}) imports {target} ({LAYERS[layer_of(target)][0]})"
        for module, targets in graph().items() for target in sorted(targets) if layer_of(target) > layer_of(module)
    ]
    assert not upward, "imports that go up a layer:\n" + "\n".join(upward)


def test_library_never_imports_the_package_face():
    """`from waveinit import x` inside the package would hide which layer x comes from: import
    it from its own module (the face's `__version__` and whole submodules excepted)."""
    modules = module_files()
    offenders = []
    for name, path in modules.items():
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = ".".join(package[: len(package) - (node.level - 1)] + ([node.module] if node.module else [])) if node.level else node.module
                if base == "waveinit":
                    offenders += [f"{name}: {a.name}" for a in node.names if a.name != "__version__" and f"waveinit.{a.name}" not in modules]
    assert not offenders, f"import these from their own modules: {offenders}"


@pytest.mark.parametrize("module", [m for m in sorted(module_files()) if layer_of(m) == 0])
def test_core_imports_no_framework_and_no_file_io(module):
    external = {i.split(".")[0] for i in imports_of(module, module_files()[module]) if not i.startswith("waveinit")}
    forbidden = sorted(external & set(CORE_FORBIDDEN))
    assert not forbidden, f"the pure core module {module} imports {forbidden}"


def test_torch_free_modules_never_reach_torch():
    modules, edges = module_files(), graph()
    for start in [m for m in modules if any(m == p or m.startswith(p + ".") for p in TORCH_FREE)]:
        seen, todo = set(), [start]
        while todo:
            m = todo.pop()
            if m in seen:
                continue
            seen.add(m)
            assert "torch" not in {i.split(".")[0] for i in imports_of(m, modules[m])}, f"{start} reaches torch through {m}"
            todo.extend(edges[m])
