"""Every bad input of the catalogue (benchmarks/bad_inputs.py) gets its answer: one
'agdrl: …' line with the words it must contain (or tyro's own box for what cannot be parsed),
never a traceback, never silent acceptance."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

spec = importlib.util.spec_from_file_location(
    "bad_inputs", Path(__file__).parents[1] / "benchmarks" / "bad_inputs.py")
catalogue = importlib.util.module_from_spec(spec)
sys.modules["bad_inputs"] = catalogue  # its dataclasses look their module up
spec.loader.exec_module(catalogue)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    made = catalogue.Workspace.create(tmp_path_factory.mktemp("bad_inputs"))
    yield made
    made.close()


def test_the_catalogue_covers_every_category_with_80_cases():
    assert len(catalogue.CASES) >= 80
    categories = {c.category for c in catalogue.CASES}
    assert categories == {"flag", "run directory", "file", "spec", "env", "device", "size"}


@pytest.mark.parametrize("index", range(len(catalogue.CASES)),
                         ids=[" ".join(c.argv)[:60] for c in catalogue.CASES])
def test_a_bad_input_gets_its_answer(workspace, index: int):
    case = catalogue.CASES[index]
    outcome = catalogue.run_case(case, workspace.argv(case, index))
    assert outcome.kind == case.kind, outcome
    assert case.expect.lower() in outcome.message.lower(), outcome.message
