"""The public surface of DESIGN.md: every exported name resolves, and importing stays light."""

from __future__ import annotations

import subprocess
import sys

import pytest

import diffcut_lab as dl


@pytest.mark.parametrize("name", [n for n in dl.__all__ if n != "__version__"])
def test_every_public_name_resolves_to_documented_package_code(name):
    """A lazy export that fails to import raises here; every public callable is ours and documented."""
    import inspect

    obj = getattr(dl, name)
    if callable(obj):
        assert obj.__module__.startswith("diffcut_lab"), obj.__module__
        assert (inspect.getdoc(obj) or "").strip(), f"dl.{name} has no docstring"


def test_unknown_attribute_raises_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        dl.nope  # noqa: B018


def test_import_does_not_load_torch_or_plotly():
    code = "import sys, diffcut_lab; print('torch' in sys.modules, 'plotly' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_errors_share_one_base():
    from diffcut_lab import errors

    names = [n for n in errors.__all__ if n != "DiffCutLabError"]
    assert len(names) >= 6
    for name in names:
        assert issubclass(getattr(dl, name), dl.DiffCutLabError)


def test_function_names_are_not_shadowed_by_submodules():
    """``dl.affinity`` stays the function even after the library imported its own modules."""
    code = (
        "import diffcut_lab as dl, diffcut_lab.ncut, diffcut_lab.pipeline, diffcut_lab.baselines; "
        "import types; print(all(callable(getattr(dl, n)) and not isinstance(getattr(dl, n), types.ModuleType) "
        "for n in ('affinity', 'recursive_ncut', 'hungarian_miou', 'pamr', 'capture', 'summarize')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "True"


def test_method_choices_match_the_implemented_methods():
    from diffcut_lab.baselines import METHODS as implemented
    from diffcut_lab.options import METHODS

    assert set(METHODS) == set(implemented)
