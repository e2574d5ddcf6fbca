"""Every module of the package imports: a renamed or removed helper fails here, not in a user's run."""

import ast
import importlib
import pkgutil
from pathlib import Path

import pytest

import lit_xai

MODULES = sorted(
    info.name for info in pkgutil.walk_packages(lit_xai.__path__, prefix="lit_xai.") if not info.ispkg
)


def test_the_package_has_modules():
    assert "lit_xai.masking" in MODULES and "lit_xai.algorithms.input_iba.__main__" in MODULES


@pytest.mark.parametrize("name", MODULES)
def test_module_imports(name):
    importlib.import_module(name)


# ------------------------------------------------------------------------------------------ room boundaries

ALGORITHMS = Path(lit_xai.__file__).parent / "algorithms"
SHARED_ROOM = "components"


def package_of(path: Path) -> str:
    """``.../lit_xai/algorithms/visfis/loss.py`` -> ``lit_xai.algorithms.visfis``."""
    return ".".join(path.relative_to(ALGORITHMS.parents[1]).parts[:-1])


def imported_modules(source: str, package: str) -> set[str]:
    """Every module ``source`` imports (``import a.b``, ``from a.b import c``, relative imports resolved against
    ``package``), read with ``ast`` so imports inside functions count too."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            module = ".".join(part for part in (base, node.module or "") if part)
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def algorithm_of(module: str) -> str | None:
    """``lit_xai.algorithms.<name>...`` -> ``<name>`` (``None`` for modules outside the algorithm folders)."""
    parts = module.split(".")
    return parts[2] if parts[:2] == ["lit_xai", "algorithms"] and len(parts) > 2 else None


def crossings(source: str, package: str) -> list[str]:
    """The imports of another algorithm folder than ``package``'s own (the shared room may import none)."""
    own = algorithm_of(package)
    allowed = {SHARED_ROOM} if own == SHARED_ROOM else {own, SHARED_ROOM}
    return sorted(m for m in imported_modules(source, package) if algorithm_of(m) not in allowed | {None})


def test_no_algorithm_folder_imports_another():
    folders = sorted(p.name for p in ALGORITHMS.iterdir() if (p / "__init__.py").exists())
    assert SHARED_ROOM in folders and {"vit_shapley", "saliency_guided", "visfis"} <= set(folders)
    loose = sorted(p.name for p in ALGORITHMS.glob("*.py") if p.name != "__init__.py")
    assert not loose, f"shared algorithm helpers belong in algorithms/{SHARED_ROOM}/, found {loose}"
    found = [
        f"{path.relative_to(ALGORITHMS)} imports {module}"
        for folder in folders
        for path in sorted((ALGORITHMS / folder).rglob("*.py"))
        for module in crossings(path.read_text(encoding="utf-8"), package_of(path))
    ]
    assert not found, (
        "algorithm folders import each other (move what they share to components/):\n" + "\n".join(found)
    )


def test_the_boundary_check_sees_every_kind_of_crossing():
    source = (
        "from lit_xai.algorithms.vit_shapley import ExplainerModule\n"
        "from ..saliency_guided.loss import saliency_guided_loss\n"
        "from . import loss\n"
        "from lit_xai.algorithms.components.training import eval_mode\n"
        "def f():\n    import lit_xai.algorithms.input_iba.explainer\n"
    )
    found = {algorithm_of(m) for m in crossings(source, "lit_xai.algorithms.visfis")}
    assert found == {"vit_shapley", "saliency_guided", "input_iba"}  # own folder and the shared room are fine
    shared = {algorithm_of(m) for m in crossings(source, "lit_xai.algorithms.components")}
    assert shared == {"vit_shapley", "saliency_guided", "input_iba"}  # "from . import loss" is its own
