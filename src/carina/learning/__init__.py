"""The learning loop on a datastore: which image to annotate next, training jobs from the final
labels, promotion of a better model and rollback."""

from carina.learning.jobs import (
    DONE,
    ERROR,
    RUNNING,
    STOPPED,
    SUBMITTED,
    JobResult,
    job_status,
    latest_job,
    request_stop,
    start_training,
    train_from_datastore,
)
from carina.learning.promotion import Decision, history, rollback
from carina.learning.strategies import STRATEGIES, next_image

__all__ = [
    "DONE",
    "ERROR",
    "RUNNING",
    "STOPPED",
    "STRATEGIES",
    "SUBMITTED",
    "Decision",
    "JobResult",
    "history",
    "job_status",
    "latest_job",
    "next_image",
    "request_stop",
    "rollback",
    "start_training",
    "train_from_datastore",
]
