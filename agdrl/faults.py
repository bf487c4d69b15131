"""Numerical and disk faults: detected where they appear, reported with where that was."""

from __future__ import annotations

from collections.abc import Iterable

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


def check_finite_gradients(where: str, parameters: Iterable[torch.Tensor]) -> None:
    """Raise :class:`NonFiniteError` naming ``where`` unless every gradient of ``parameters``
    is finite (without changing them, unlike a clip)."""
    grads = [p.grad for p in parameters if p.grad is not None]
    if grads:
        check_finite(where, torch.linalg.vector_norm(
            torch.stack([torch.linalg.vector_norm(g) for g in grads])))
