"""The Python cell registry (rnnfast._cells.CELLS) and the compiled one (cells/all.hpp) agree.

Every cell the C++ core registers has a CellSpec with the same gate count, state arity and extra
parameters, and every CellSpec names a compiled cell: a cell registered on one side only would be
missed by the tests that parametrise over CELLS, or fail at the first call.
"""

from __future__ import annotations

import numpy as np
import pytest

from rnnfast._cells import CELL_NAMES, CELLS
from rnnfast._loader import core


def test_every_compiled_cell_has_a_spec_and_agrees() -> None:
    compiled = {c["name"]: c for c in core.cells()}
    assert set(compiled) == set(CELL_NAMES), (sorted(compiled), sorted(CELL_NAMES))
    for spec in CELLS:
        c = compiled[spec.name]
        assert c["gates"] == spec.gates, spec.name
        assert c["has_cell_state"] == spec.has_cell_state, spec.name
        assert tuple(tuple(e) for e in c["extra_params"]) == spec.extra_params, spec.name


def test_unknown_cell_is_a_value_error_listing_the_registered_ones() -> None:
    x = np.zeros((2, 1, 3), np.float32)
    w = np.zeros((4, 3), np.float32)
    with pytest.raises(
        ValueError, match="cell: expected one of 'rnn', 'lstm', 'gru'.*got 'peephole'"
    ):
        core.sequence_forward(
            "peephole",
            x,
            None,
            None,
            w,
            np.zeros((4, 4), np.float32),
            None,
            None,
            None,
            None,
            "tanh",
            False,
        )


@pytest.mark.parametrize("extra", [(np.zeros(3, np.float32),), "abc", 5])
def test_extra_parameters_are_checked_against_the_cell(extra: object) -> None:
    x = np.zeros((2, 1, 3), np.float32)
    with pytest.raises((ValueError, TypeError), match="extra"):
        core.sequence_forward(
            "gru",
            x,
            None,
            None,
            np.zeros((6, 3), np.float32),
            np.zeros((6, 2), np.float32),
            None,
            None,
            extra,
            None,
            "tanh",
            False,
        )
