"""Server-side FLARE components of Carina's jobs (loaded by FLARE from the job's config).

* :class:`ArchivePersistor` starts from the archive's weights (shipped in the job as
  ``initial_model.npz``) and saves each new global model as ``global_model.npz`` in the run folder,
  atomically. It needs numpy only, so the FL server needs no torch. Under homomorphic encryption the
  server holds the global model encrypted: those tensors are saved as their serialised ciphertexts
  (bytes), named in :data:`ENCRYPTED_KEY`, for a site's key to decrypt
  (:func:`carina.fl.weights.decrypt`).
* :class:`FedOptServer` is FedAvg with a server optimiser (FedAvgM momentum or FedAdam, Reddi et
  al. 2021) applied to the averaged client update, written in numpy.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from nvflare.apis.fl_context import FLContext
from nvflare.app_common.abstract.fl_model import FLModel, ParamsType
from nvflare.app_common.abstract.model import (
    ModelLearnable,
    ModelLearnableKey,
    make_model_learnable,
)
from nvflare.app_common.abstract.model_persistor import ModelPersistor
from nvflare.app_common.workflows.fedavg import FedAvg

INITIAL_MODEL = "initial_model.npz"
GLOBAL_MODEL = "global_model.npz"
ENCRYPTED_KEY = "__carina_encrypted__"


class ArchivePersistor(ModelPersistor):  # type: ignore[misc]
    """Initial weights from the job's ``initial_model.npz``; global models to the run folder."""

    def __init__(
        self,
        initial_model: str = INITIAL_MODEL,
        save_name: str = GLOBAL_MODEL,
        filter_id: str | None = None,
    ) -> None:
        super().__init__(filter_id=filter_id)
        self.initial_model = initial_model
        self.save_name = save_name

    def load_model(self, fl_ctx: FLContext) -> ModelLearnable:
        path = Path(self.initial_model)
        if not path.is_absolute():
            workspace = fl_ctx.get_engine().get_workspace()
            path = Path(workspace.get_app_custom_dir(fl_ctx.get_job_id())) / path
        with np.load(path) as stored:
            weights = {name: stored[name] for name in stored.files}
        return make_model_learnable(weights=weights, meta_props={})

    def save_model(self, model: ModelLearnable, fl_ctx: FLContext) -> None:
        workspace = fl_ctx.get_engine().get_workspace()
        folder = Path(workspace.get_run_dir(fl_ctx.get_job_id()))
        partial = folder / (self.save_name + ".partial.npz")
        arrays: dict[str, Any] = {}
        encrypted = []
        for name, value in model[ModelLearnableKey.WEIGHTS].items():
            if isinstance(value, bytes):  # a ciphertext, serialised by FLARE's HE persistor filter
                arrays[name] = np.frombuffer(value, dtype=np.uint8)
                encrypted.append(name)
            else:
                arrays[name] = value
        if encrypted:
            arrays[ENCRYPTED_KEY] = np.array(encrypted)
        np.savez(partial, **arrays)
        partial.replace(folder / self.save_name)


class FedOptServer(FedAvg):  # type: ignore[misc]
    """FedAvg whose averaged update goes through a server optimiser.

    Args:
        optimizer: ``momentum`` (FedAvgM: v = beta1 v + d; w += lr v) or ``adam`` (FedAdam).
        server_lr: the server learning rate.
        beta1, beta2, tau: momentum and Adam constants (tau keeps the Adam step finite).
        num_clients, num_rounds, persistor_id: as for FedAvg.
    """

    def __init__(
        self,
        *,
        num_clients: int,
        num_rounds: int,
        persistor_id: str = "persistor",
        optimizer: str = "momentum",
        server_lr: float = 1.0,
        beta1: float = 0.9,
        beta2: float = 0.99,
        tau: float = 1e-3,
    ) -> None:
        # Named here, not passed through **kwargs: FLARE's job export writes a component's
        # arguments from its own signature.
        super().__init__(num_clients=num_clients, num_rounds=num_rounds, persistor_id=persistor_id)
        if optimizer not in ("momentum", "adam"):
            raise ValueError(f"optimizer {optimizer!r}: give momentum or adam")
        self.optimizer = optimizer
        self.server_lr = server_lr
        self.beta1, self.beta2, self.tau = beta1, beta2, tau
        self._first: dict[str, Any] = {}
        self._second: dict[str, Any] = {}

    def update_model(self, model: FLModel, aggr_result: FLModel) -> FLModel:
        """Turn the averaged client update into a server step, then update as FedAvg does."""
        updates = aggr_result.params
        if aggr_result.params_type == ParamsType.FULL:
            updates = {name: updates[name] - model.params[name] for name in updates}
        steps = {}
        for name, update in updates.items():
            update = np.asarray(update, dtype=np.float64)
            first = self.beta1 * self._first.get(name, 0.0) + (
                update if self.optimizer == "momentum" else (1 - self.beta1) * update
            )
            self._first[name] = first
            if self.optimizer == "momentum":
                step = self.server_lr * first
            else:
                second = self.beta2 * self._second.get(name, 0.0) + (1 - self.beta2) * update**2
                self._second[name] = second
                step = self.server_lr * first / (np.sqrt(second) + self.tau)
            steps[name] = step.astype(np.asarray(model.params[name]).dtype)
        stepped = FLModel(
            params_type=ParamsType.DIFF,
            params=steps,
            metrics=aggr_result.metrics,
            meta=aggr_result.meta,
        )
        return super().update_model(model, stepped)
