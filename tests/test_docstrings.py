"""The examples in docstrings are run: each module's ``>>>`` lines must print what they show.

Examples marked ``# doctest: +SKIP`` need a Ray runtime or a finished run; the tests of their modules run that code.
"""

import doctest
import importlib
import pkgutil

import pytest

import operators
import streamflow

PACKAGES = (streamflow, operators)


def runnable(test: doctest.DocTest) -> bool:
    return any(not example.options.get(doctest.SKIP) for example in test.examples)


def modules_with_examples() -> list[str]:
    """Every module of the packages whose docstrings hold an example that runs (``__main__`` modules are scripts)."""
    names = []
    for package in PACKAGES:
        for info in pkgutil.walk_packages(package.__path__, prefix=f"{package.__name__}."):
            if info.name.rsplit(".", 1)[-1] == "__main__":
                continue
            finder = doctest.DocTestFinder()
            if any(runnable(test) for test in finder.find(importlib.import_module(info.name))):
                names.append(info.name)
    return names


@pytest.mark.parametrize("module", modules_with_examples())
def test_docstring_examples_print_what_they_show(module):
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for test in doctest.DocTestFinder().find(importlib.import_module(module)):
        runner.run(test)
    failed, attempted = runner.summarize(verbose=False)
    assert attempted > 0 and failed == 0, f"{failed} of {attempted} examples in {module} failed (see the output above)"
