"""nnU-Net v2 results folders served as segmentation models, through nnunetv2's own predictor.

The folder is what ``nnUNetv2_train`` writes (``dataset.json``, ``plans.json``,
``fold_N/checkpoint_final.pth``); ``carina.json`` beside them chooses folds, mirroring and the
checkpoint (:class:`~carina.archive.schema.NnUNetSettings`). The image goes through nnU-Net's own
reader of the plans (SimpleITK by default), pre-processing, sliding window, ensembling and export,
so the result is what ``nnUNetv2_predict`` writes, on the input's grid.

Checkpoints are read with ``weights_only=True`` (nnunetv2's own loader unpickles them), and the
network is built by the trainer class the checkpoint names when nnunetv2 has it, else by
``nnUNetTrainer``'s plans-driven builder (which every trainer that keeps the plans' architecture
shares).
"""

from __future__ import annotations

import logging
import math
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from carina.archive.layout import ArchiveLayout
from carina.archive.schema import NnUNetSettings, ServingConfig, read_json, validate
from carina.archive.security import load_weights_only
from carina.errors import ArchiveError
from carina.kinds.base import InferenceRequest, InferenceResult, check_request
from carina.limits import check_work

if TYPE_CHECKING:
    from carina.archive import Archive

log = logging.getLogger(__name__)


class NnUNetRunner:
    """A loaded nnU-Net predictor and the reader/writer of its plans."""

    def __init__(self, predictor: Any, spec: ServingConfig, nbytes: int) -> None:
        self.predictor = predictor
        self.spec = spec
        self.nbytes = nbytes
        self.reader_writer = predictor.plans_manager.image_reader_writer_class

    def run(self, request: InferenceRequest) -> InferenceResult:
        """The label map of the whole image (guidance, if any, is not used).

        Raises:
            ImageReadError: not a 3D greyscale image.
            GuidanceError: the image needs more working memory than the request may use.
            ArchiveError: nnU-Net returned a label map of another shape.
        """
        from carina.io import load_volume, save_volume

        check_request(request, self.spec)
        image = request.image
        channels = len(self.spec.labels) + 1
        check_work(
            4 * math.prod(image.shape) * (3 + channels),
            request.max_work_bytes,
            "segmenting this image",
        )
        timings: dict[str, float] = {}
        reader = self.reader_writer()
        with tempfile.TemporaryDirectory(prefix="carina-nnunet-") as scratch:
            start = time.perf_counter()
            source, target = Path(scratch) / "image.nii.gz", Path(scratch) / "label.nii.gz"
            save_volume(image, source)
            data, properties = reader.read_images([str(source)])
            timings["pre"] = time.perf_counter() - start
            start = time.perf_counter()
            segmentation = self.predictor.predict_single_npy_array(
                data, properties, None, None, False
            )
            timings["infer"] = time.perf_counter() - start
            start = time.perf_counter()
            reader.write_seg(np.asarray(segmentation, dtype=np.uint8), str(target), properties)
            label = load_volume(target)
        if label.shape != image.shape:
            raise ArchiveError(
                f"nnU-Net returned a label map of shape {label.shape} for an image of shape "
                f"{image.shape}"
            )
        timings["post"] = time.perf_counter() - start
        return InferenceResult(image.with_array(label.array.astype(np.uint8)), timings=timings)

    def memory_bytes(self) -> int:
        """The weights of every fold, and the network's working memory."""
        return self.nbytes


def load(archive: Archive, device: str | None) -> NnUNetRunner:
    """The runner of an nnU-Net v2 results folder.

    Raises:
        ConfigError: the folder's configs (:func:`carina.archive.serving.nnunet_serving_config`).
        ArchiveError: a checkpoint that cannot be read as weights, or weights that do not fit the
            network the plans describe.
    """
    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    from carina.engine.network import pick_device

    layout = archive.layout
    spec = archive.serving_config()
    settings = _settings(layout)
    folds = [str(f) for f in settings.folds] if settings.folds else layout.nnunet_folds()
    checkpoints = [_checkpoint(layout, fold, settings.checkpoint) for fold in folds]
    weights = [checkpoint["network_weights"] for checkpoint in checkpoints]
    trainer_name = str(checkpoints[0].get("trainer_name") or "nnUNetTrainer")
    dataset = read_json(layout.nnunet_dataset)
    network, plans_manager, configuration_manager = _network(layout, checkpoints[0], dataset)
    for fold, state in zip(folds, weights, strict=True):
        try:
            network.load_state_dict(state)
        except RuntimeError as exc:
            lines = str(exc).strip().splitlines()
            raise ArchiveError(
                f"fold_{fold}/{settings.checkpoint}: the weights do not fit the network of "
                f"plans.json ({lines[-1].strip() if lines else exc})"
            ) from exc
    target = pick_device(device)
    predictor = nnUNetPredictor(
        tile_step_size=settings.tile_step_size,
        use_gaussian=True,
        use_mirroring=settings.mirroring,
        perform_everything_on_device=target.type == "cuda",
        device=target,
        verbose=False,
        verbose_preprocessing=False,
        allow_tqdm=False,
    )
    mirror_axes = checkpoints[0].get("inference_allowed_mirroring_axes")
    predictor.manual_initialization(
        network, plans_manager, configuration_manager, weights, dataset, trainer_name, mirror_axes
    )
    size = sum(
        t.numel() * t.element_size() for s in weights for t in s.values() if torch.is_tensor(t)
    )
    return NnUNetRunner(predictor, spec, size + 2 * size // max(len(weights), 1))


def _checkpoint(layout: ArchiveLayout, fold: str, name: str) -> dict[str, Any]:
    """A fold's checkpoint, read as weights only.

    Raises:
        ArchiveError: it needs pickle, is damaged, or is not an nnU-Net checkpoint.
    """
    try:
        checkpoint = load_weights_only(layout.root / f"fold_{fold}" / name)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError, ...
        raise ArchiveError(
            f"fold_{fold}/{name}: cannot be read as weights only ({type(exc).__name__}); "
            "Carina never unpickles objects"
        ) from exc
    if not isinstance(checkpoint, dict) or "network_weights" not in checkpoint:
        raise ArchiveError(f"fold_{fold}/{name}: not an nnU-Net checkpoint")
    return checkpoint


def _network(
    layout: ArchiveLayout, checkpoint: dict[str, Any], dataset: Any
) -> tuple[Any, Any, Any]:
    """The network ``plans.json`` describes for the checkpoint's configuration (no weights yet),
    with nnunetv2's plans and configuration managers.

    Raises:
        ArchiveError: the plans have no such configuration.
    """
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    plans_manager = PlansManager(read_json(layout.nnunet_plans))
    configuration = str((checkpoint.get("init_args") or {}).get("configuration") or "")
    try:
        configuration_manager = plans_manager.get_configuration(configuration)
    except Exception as exc:  # nnunetv2 raises RuntimeError for an unknown configuration
        raise ArchiveError(
            f"plans.json has no configuration {configuration!r} (the checkpoint's)"
        ) from exc
    trainer = _trainer_class(str(checkpoint.get("trainer_name") or "nnUNetTrainer"))
    network = trainer.build_network_architecture(
        plans_manager,
        configuration_manager,
        determine_num_input_channels(plans_manager, configuration_manager, dataset),
        plans_manager.get_label_manager(dataset).num_segmentation_heads,
        enable_deep_supervision=False,
    )
    return network, plans_manager, configuration_manager


def _settings(layout: ArchiveLayout) -> NnUNetSettings:
    path = layout.nnunet_settings
    return validate(NnUNetSettings, read_json(path) if path.is_file() else {}, path.name)


def _trainer_class(name: str) -> Any:
    """The nnunetv2 trainer class ``name`` (its network builder), else ``nnUNetTrainer``."""
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    if name == "nnUNetTrainer":
        return nnUNetTrainer
    try:
        from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

        found = recursive_find_trainer_class_by_name(name)
    except Exception:  # not found, or a trainer module needs a missing package (timm, ...)
        found = None
    if found is None:
        log.warning(
            "nnU-Net trainer not found; the plans' network is built by nnUNetTrainer",
            extra={"trainer": name},
        )
        return nnUNetTrainer
    return found
