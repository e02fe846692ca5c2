"""The learning loop on a datastore: which image to annotate next, training jobs from the final
labels, promotion of a better model and rollback."""

from carina.learning.jobs import (
    JobResult,
    latest_job,
    request_stop,
    start_training,
    train_from_datastore,
)
from carina.learning.promotion import Decision, history, rollback
from carina.learning.strategies import STRATEGIES, next_image

__all__ = [
    "STRATEGIES",
    "Decision",
    "JobResult",
    "history",
    "latest_job",
    "next_image",
    "request_stop",
    "rollback",
    "start_training",
    "train_from_datastore",
]
