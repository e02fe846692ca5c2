"""The learning loop on a datastore: which image to annotate next (and, as it grows, training jobs
from the final labels, promotion and rollback)."""

from carina.learning.strategies import STRATEGIES, next_image

__all__ = ["STRATEGIES", "next_image"]
