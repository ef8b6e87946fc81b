"""The layout the code is kept in: ``git/`` is layered (each module imports only the ones
before it, never the package itself, so no circle can form inside the door), every name
of it is reached through the one door (``from worktree_runner import git``), and the
executors build on a stream's life without ``run/`` importing them back."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

from worktree_runner import git

PACKAGE = Path(__file__).resolve().parent.parent / "worktree_runner"
LAYERS = ["door", "refs", "status", "worktrees", "merging"]


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports, at the top or inside a function (``from a import b``
    counts as ``a.b`` too: b may be a module)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found |= {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
    return found


def layering_faults(folder: Path, package: str, layers: list[str]) -> list[str]:
    faults: dict[str, None] = {}
    for index, name in enumerate(layers):
        for module in sorted(imported_modules(folder / f"{name}.py")):
            sibling = module.removeprefix(f"{package}.").split(".")[0]
            if module == package:
                faults[f"{name} imports the package {package} itself"] = None
            elif module.startswith(f"{package}.") and sibling not in layers[:index] \
                    and sibling in layers:
                faults[f"{name} imports {sibling}, which is not below it"] = None
    return list(faults)


def test_each_git_module_imports_only_the_ones_before_it() -> None:
    assert layering_faults(PACKAGE / "git", "worktree_runner.git", LAYERS) == []


def test_a_module_importing_upwards_or_the_package_is_caught(tmp_path: Path) -> None:
    for name in LAYERS:
        (tmp_path / f"{name}.py").write_text("")
    (tmp_path / "refs.py").write_text("from worktree_runner.git.status import unhide\n")
    (tmp_path / "status.py").write_text("def f():\n    from worktree_runner import git\n")
    (tmp_path / "merging.py").write_text("import worktree_runner.git\n")
    assert layering_faults(tmp_path, "worktree_runner.git", LAYERS) == [
        "refs imports status, which is not below it",
        "status imports the package worktree_runner.git itself",
        "merging imports the package worktree_runner.git itself",
    ]


def test_the_git_package_holds_exactly_its_layers() -> None:
    """A new module goes into the layering on purpose, not beside it."""
    modules = {path.stem for path in (PACKAGE / "git").glob("*.py")}
    assert modules == {"__init__", *LAYERS}


def test_every_public_name_of_the_git_modules_is_reached_through_the_door() -> None:
    for name in LAYERS:
        module = getattr(git, name)
        public = {n for n, value in vars(module).items() if not n.startswith("_")
                  and getattr(value, "__module__", module.__name__) == module.__name__
                  and not inspect.ismodule(value)}
        defined = {n for n in public if n.isupper() or callable(getattr(module, n))}
        missing = sorted(n for n in defined if getattr(git, n, None) is not getattr(module, n))
        assert missing == [], f"git.{name} defines names git does not export: {missing}"
    assert set(git.__all__) <= set(dir(git))


def test_run_never_imports_the_executors_but_the_runner_choosing_one() -> None:
    for path in sorted((PACKAGE / "run").glob("*.py")):
        executors = {m for m in imported_modules(path) if m.startswith("worktree_runner.executors")}
        assert not executors or path.name == "runner.py", f"run/{path.name} imports {executors}"
    assert not (PACKAGE / "run" / "distributed.py").exists()
