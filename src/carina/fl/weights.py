"""Weights between torch and the numpy dictionaries FLARE exchanges."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

NumpyWeights = dict[str, npt.NDArray[Any]]


def to_numpy(state: Mapping[str, torch.Tensor]) -> NumpyWeights:
    """A state dict as numpy arrays (on the CPU, copied)."""
    return {name: tensor.detach().cpu().numpy().copy() for name, tensor in state.items()}


def to_state_dict(
    weights: Mapping[str, npt.NDArray[Any]], like: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Numpy weights as a state dict shaped and typed like ``like`` (averaging makes ints floats).

    Raises:
        ValueError: a tensor is missing or has another shape.
    """
    state: dict[str, torch.Tensor] = {}
    for name, reference in like.items():
        if name not in weights:
            raise ValueError(f"the global model has no tensor {name}")
        value = np.asarray(weights[name])
        if tuple(value.shape) != tuple(reference.shape):
            raise ValueError(
                f"tensor {name}: global shape {list(value.shape)}, local {list(reference.shape)}"
            )
        if reference.dtype.is_floating_point:
            state[name] = torch.as_tensor(value, dtype=reference.dtype)
        else:
            state[name] = torch.as_tensor(np.rint(value), dtype=reference.dtype)
    return state


def weights_bytes(weights: Mapping[str, npt.NDArray[Any]]) -> int:
    """The size of the arrays, in bytes (what one model transfer carries, before framing)."""
    return int(sum(np.asarray(value).nbytes for value in weights.values()))
