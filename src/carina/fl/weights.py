"""Weights between torch and the numpy dictionaries FLARE exchanges."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
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
    """Numpy weights as a state dict shaped and typed like ``like`` (averaging makes ints floats;
    homomorphic encryption flattens tensors, so a flat vector of the right size is reshaped).

    Raises:
        ValueError: a tensor is missing or has another shape.
    """
    state: dict[str, torch.Tensor] = {}
    for name, reference in like.items():
        if name not in weights:
            raise ValueError(f"the global model has no tensor {name}")
        value = np.asarray(weights[name])
        if value.ndim == 1 and value.size == reference.numel():
            value = value.reshape(tuple(reference.shape))
        if tuple(value.shape) != tuple(reference.shape):
            raise ValueError(
                f"tensor {name}: global shape {list(value.shape)}, local {list(reference.shape)}"
            )
        if reference.dtype.is_floating_point:
            state[name] = torch.as_tensor(value, dtype=reference.dtype)
        else:
            state[name] = torch.as_tensor(np.rint(value), dtype=reference.dtype)
    return state


def stored_bytes(path: Path) -> int:
    """The payload of one global-model transfer, from its saved file: the arrays' bytes (the
    ciphertexts' when encrypted), before framing."""
    from carina.fl.components import ENCRYPTED_KEY

    with np.load(path) as stored:
        return int(sum(stored[name].nbytes for name in stored.files if name != ENCRYPTED_KEY))


def load_global(path: Path, *, context: Path | None = None) -> NumpyWeights:
    """A global model saved by :class:`carina.fl.components.ArchivePersistor`.

    Encrypted tensors (homomorphic encryption) are decrypted with the TenSEAL context ``context``,
    a site's ``startup/client_context.tenseal``, which holds the secret key; they come back flat.

    Raises:
        ValueError: the model is encrypted and no context (or one without a secret key) is given.
    """
    from carina.fl.components import ENCRYPTED_KEY

    with np.load(path) as stored:
        weights = {name: stored[name] for name in stored.files}
    encrypted = [str(name) for name in weights.pop(ENCRYPTED_KEY, np.array([]))]
    if not encrypted:
        return weights
    if context is None or not context.is_file():
        raise ValueError(
            f"{path.name} is homomorphically encrypted: decrypting it needs a site's "
            "startup/client_context.tenseal"
        )
    import tenseal as ts

    keys = ts.context_from(context.read_bytes())
    if not keys.has_secret_key():
        raise ValueError(f"{context}: this TenSEAL context holds no secret key (the server's?)")
    for name in encrypted:
        vector = ts.ckks_vector_from(keys, weights[name].tobytes())
        weights[name] = np.asarray(vector.decrypt(), dtype=np.float64)
    return weights
