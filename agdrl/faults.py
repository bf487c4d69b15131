"""Numerical and disk faults: detected where they appear, reported with where that was."""

from __future__ import annotations

import torch


class NonFiniteError(FloatingPointError):
    """NaN or Inf in ``where`` (an observation, a loss, a gradient, an imagined segment). Raised
    before the bad values reach any weights."""

    def __init__(self, where: str):
        super().__init__(f"non-finite values (NaN or Inf) in {where}")
        self.where = where


class NumericalFaultError(RuntimeError):
    """Training stopped on a :class:`NonFiniteError` (after saving the last good state)."""


class RunDirectoryError(OSError):
    """The run directory cannot be written (missing permission, not a directory, disk full)."""


def check_finite(where: str, *values: torch.Tensor | float) -> None:
    """Raise :class:`NonFiniteError` naming ``where`` unless every value is finite."""
    for value in values:
        finite = (torch.isfinite(value).all() if torch.is_tensor(value)
                  else torch.isfinite(torch.tensor(float(value))))
        if not finite:
            raise NonFiniteError(where)
