"""The README's Python examples and the API module's docstring run as doctests."""
from __future__ import annotations

import doctest
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_examples_run():
    text = README.read_text(encoding="utf-8")
    assert ">>> from collapse_audit import" in text, "the README's Python API section lost its examples"
    res = doctest.testfile(str(README), module_relative=False, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE,
                           verbose=False, report=True)
    assert res.attempted >= 10
    assert res.failed == 0, f"{res.failed} README example(s) failed (see the output above)"


@pytest.mark.parametrize("module", ["collapse_audit.api"])
def test_module_docstring_examples_run(module):
    import importlib

    m = importlib.import_module(module)
    res = doctest.testmod(m, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert res.attempted >= 1 and res.failed == 0
