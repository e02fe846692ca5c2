"""A failure inside a model's pipeline becomes an error that names the model, step and cause."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from monai.transforms import Compose, MapTransform

from carina.engine.failures import explain, model_failures
from carina.errors import ImageReadError, ModelRunError, ServerBusyError


class Failing(MapTransform):
    """Raises ``error`` when applied."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(keys="image")
        self.error = error

    def __call__(self, data: Any) -> Any:
        raise self.error


def run(error: BaseException) -> None:
    """``error`` raised by a transform inside two nested Compose, as an archive's pipeline does."""
    Compose([Compose([Failing(error)])])({"image": torch.zeros(1, 4, 4, 4)})


def test_the_failing_step_and_its_cause_are_named() -> None:
    with pytest.raises(ModelRunError) as caught, model_failures("spleen"):
        run(ValueError("expected 2 channels, got 1"))
    assert str(caught.value) == (
        "spleen: the model failed on this image in Failing: ValueError: expected 2 channels, got 1"
    )


def test_a_carina_error_inside_the_chain_is_raised_as_it_is() -> None:
    inner = ImageReadError("ct.nii.gz", "not a NIfTI file")
    with pytest.raises(ImageReadError) as caught, model_failures("spleen"):
        run(inner)
    assert caught.value is inner


def test_running_out_of_memory_is_busy_not_a_model_fault() -> None:
    assert isinstance(
        explain("spleen", torch.OutOfMemoryError("CUDA out of memory")), ServerBusyError
    )
    assert isinstance(explain("spleen", MemoryError()), ServerBusyError)


def test_an_error_without_a_step_still_names_the_model() -> None:
    error = explain("spleen", RuntimeError(""))
    assert str(error) == "spleen: the model failed on this image: RuntimeError: no message"


def test_paths_in_the_cause_are_cut_to_their_last_part() -> None:
    error = explain("spleen", OSError("cannot open /srv/carina/workspace/models/spleen/x.bin"))
    assert str(error) == "spleen: the model failed on this image: OSError: cannot open x.bin"
