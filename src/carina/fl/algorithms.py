"""The client side of FedProx and SCAFFOLD, as handlers on Carina's MONAI trainer.

Both act on gradients right after the backward pass (MONAI's ``BACKWARD_COMPLETED``, before the
optimiser step), so they work with any optimiser the archive names:

* FedProx (Li et al. 2020) adds mu (w - w_global), the gradient of (mu / 2) ||w - w_global||^2.
* SCAFFOLD (Karimireddy et al. 2020) adds c_global - c_local, then updates the site's control
  variate from how far the weights moved: c_local' = c_local - c_global + (w_global - w) / (K lr).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

Attach = Callable[[Any], None]


def _on_backward(trainer: Any, add: Callable[[str, torch.nn.Parameter], torch.Tensor]) -> None:
    from monai.engines.utils import IterationEvents

    def correct(engine: Any) -> None:
        with torch.no_grad():
            for name, parameter in engine.network.named_parameters():
                if parameter.grad is not None:
                    parameter.grad.add_(add(name, parameter))

    trainer.add_event_handler(IterationEvents.BACKWARD_COMPLETED, correct)


def fedprox(mu: float) -> Callable[[dict[str, torch.Tensor]], Attach]:
    """Handler factory: from the round's global weights, a handler adding the proximal gradient."""

    def make(start: dict[str, torch.Tensor]) -> Attach:
        anchors = {name: tensor.detach().clone() for name, tensor in start.items()}

        def attach(trainer: Any) -> None:
            _on_backward(
                trainer,
                lambda name, p: mu * (p.detach() - anchors[name].to(p.device, p.dtype)),
            )

        return attach

    return make


@dataclass
class Scaffold:
    """A site's SCAFFOLD state across rounds: its control variate and the global one."""

    local: dict[str, npt.NDArray[Any]] = field(default_factory=dict)
    global_: dict[str, npt.NDArray[Any]] = field(default_factory=dict)
    start: dict[str, torch.Tensor] = field(default_factory=dict)
    lr: float = 0.0

    def begin_round(self, global_controls: Mapping[str, Any] | None) -> None:
        """Take the server's control variate (absent in the first round: zeros)."""
        self.global_ = {
            k: np.asarray(v, dtype=np.float32) for k, v in (global_controls or {}).items()
        }

    def handlers(self) -> Callable[[dict[str, torch.Tensor]], Attach]:
        """Handler factory correcting each gradient by c_global - c_local."""

        def make(start: dict[str, torch.Tensor]) -> Attach:
            self.start = {name: tensor.detach().clone() for name, tensor in start.items()}

            def attach(trainer: Any) -> None:
                self.lr = float(trainer.optimizer.param_groups[0]["lr"])
                corrections: dict[str, torch.Tensor] = {}

                def add(name: str, parameter: torch.nn.Parameter) -> torch.Tensor:
                    if name not in corrections:
                        shape = tuple(parameter.shape)
                        zero = np.zeros(shape, np.float32)
                        value = self.global_.get(name, zero) - self.local.get(name, zero)
                        corrections[name] = torch.as_tensor(value, device=parameter.device)
                    return corrections[name]

                _on_backward(trainer, add)

            return attach

        return make

    def finish(self, network: torch.nn.Module, steps: int) -> dict[str, Any]:
        """Update c_local from the round; return the change for the server (its meta entry)."""
        from nvflare.app_common.app_constant import AlgorithmConstants

        scale = 1.0 / max(steps * self.lr, 1e-12)
        delta: dict[str, npt.NDArray[Any]] = {}
        for name, parameter in network.named_parameters():
            moved = (self.start[name].cpu() - parameter.detach().cpu()).numpy()
            zero = np.zeros(moved.shape, np.float32)
            old = self.local.get(name, zero)
            new = old - self.global_.get(name, zero) + scale * moved
            delta[name] = (new - old).astype(np.float32)
            self.local[name] = new.astype(np.float32)
        return {AlgorithmConstants.SCAFFOLD_CTRL_DIFF: delta}
