"""Real sample data shipped by installed packages, the datasets built from it, synthetic volumes.

``DATASETS`` names the shipped datasets (``spine_ct``, ``spine_mr``, ``spine_ct_vertebra``,
``spine_mr_vertebra``, ``brain_mr``); ``export_dataset`` writes one in the MSD layout with its
training half and held-out half.
"""

from carina.data.datasets import DATASETS, Case, DatasetSpec, Split, get_dataset, split_heldout
from carina.data.msd import ensure_dataset, export_dataset
from carina.data.sources import SAMPLES, SampleFile, locate_sample, sample_available
from carina.data.synthetic import synthetic_case

__all__ = [
    "DATASETS",
    "SAMPLES",
    "Case",
    "DatasetSpec",
    "SampleFile",
    "Split",
    "ensure_dataset",
    "export_dataset",
    "get_dataset",
    "locate_sample",
    "sample_available",
    "split_heldout",
    "synthetic_case",
]
