"""Every module of the package imports: a renamed or removed helper fails here, not in a user's run."""

import importlib
import pkgutil

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
