"""Click simulation while training DeepGrow: the iteration MONAI's trainer runs for each batch.

Each batch first goes through a random number of rounds (up to ``max_clicks``) in which the network
predicts with its current guidance and a corrective click is added where the prediction is most
wrong (foreground click in the largest miss, background click in the largest false alarm). Then the
usual supervised step runs on the final guidance. This teaches the model to use later clicks.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from carina.interactive.guidance import corrective_click, gaussian_map


class ClickSimulation:
    """An ``iteration_update`` for MONAI's SupervisedTrainer / SupervisedEvaluator.

    Args:
        max_clicks: the most corrective clicks before the training step.
        sigma: the Gaussian width of a click, in ROI voxels.
        train: random number of rounds (training) or always ``max_clicks`` (evaluation).
        seed: seed of the click sampling.
    """

    def __init__(
        self, max_clicks: int = 3, sigma: float = 2.0, train: bool = True, seed: int = 0
    ) -> None:
        self.max_clicks = max_clicks
        self.sigma = sigma
        self.train = train
        self.rng = np.random.default_rng(seed)

    def __call__(self, engine: Any, batch: dict[str, Any]) -> dict[str, Any]:
        rounds = int(self.rng.integers(0, self.max_clicks + 1)) if self.train else self.max_clicks
        for _ in range(rounds):
            self.add_clicks(engine, batch)
        return engine._iteration(engine, batch)  # type: ignore[no-any-return]

    def add_clicks(self, engine: Any, batch: dict[str, Any]) -> None:
        """One round: predict, then add one corrective click to each sample's guidance."""
        image: torch.Tensor = batch["image"]
        labels = np.asarray(batch["label"].detach().cpu())[:, 0] > 0.5
        was_training = engine.network.training
        engine.network.eval()
        with torch.no_grad():
            logits = engine.inferer(image.to(engine.state.device), engine.network)
        engine.network.train(was_training)
        predictions = (torch.sigmoid(logits.float()) > 0.5).cpu().numpy()[:, 0]
        for index in range(image.shape[0]):
            click = corrective_click(labels[index], predictions[index], self.rng)
            if click is None:
                continue
            channel = 1 if click.foreground else 2
            blob = gaussian_map(image.shape[2:], [click.point], self.sigma)
            image[index, channel] = torch.maximum(
                image[index, channel], torch.from_numpy(blob).to(image.device)
            )
