"""Building an archive's network and loading its weights (always ``weights_only=True``)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch

from carina.archive import ResolvedConfig
from carina.errors import ArchiveError, ConfigError

#: Keys under which checkpoints from other tools keep the state dict.
_STATE_KEYS = ("model", "network", "state_dict", "net")


def pick_device(device: str | None = None) -> torch.device:
    """The requested device, else CUDA when present, else CPU.

    Raises:
        ConfigError: a device name torch does not know, or a CUDA device this machine lacks.
    """
    if not device:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        chosen = torch.device(device)
    except RuntimeError as exc:
        raise ConfigError("--device", device, "use cpu, cuda or cuda:N") from exc
    if chosen.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            why = "torch was built without CUDA" if torch.version.cuda is None else "no GPU found"
            raise ConfigError("--device", device, f"this machine has no CUDA ({why}): use cpu")
        if chosen.index is not None and chosen.index >= count:
            raise ConfigError("--device", device, f"this machine has {count} CUDA device(s)")
    return chosen


def load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from a weights file: a plain state dict, or one under a usual key.

    Raises:
        ArchiveError: missing file, pickled objects, or no state dict inside.
    """
    if not path.is_file():
        raise ArchiveError(f"{path.name}: no weights file (train the archive first)")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError, RuntimeError, EOFError, ...
        raise ArchiveError(
            f"{path.name}: cannot load as weights only ({type(exc).__name__}); "
            "Carina never unpickles objects"
        ) from exc
    if isinstance(loaded, dict):
        for key in _STATE_KEYS:
            if isinstance(loaded.get(key), dict):
                loaded = loaded[key]
                break
    if not isinstance(loaded, dict) or not all(
        isinstance(v, torch.Tensor) for v in loaded.values()
    ):
        raise ArchiveError(f"{path.name}: holds no state dict of tensors")
    return loaded


def build_network(resolved: ResolvedConfig, key: str = "network_def") -> torch.nn.Module:
    """Instantiate the network component.

    Raises:
        ConfigError: the component cannot be built.
    """
    network = resolved.instantiate(key)
    if not isinstance(network, torch.nn.Module):
        raise ArchiveError(f"{resolved.file}: {key} is a {type(network).__name__}, not a network")
    return network


def load_network(
    resolved: ResolvedConfig,
    weights: Path,
    *,
    torchscript: Path | None = None,
    onnx: Path | None = None,
) -> torch.nn.Module:
    """The trained network: TorchScript when ``torchscript`` exists or ``weights`` is a ``.ts``
    file; ONNX (run by onnxruntime) when ``weights`` is a ``.onnx`` file, or is missing beside an
    ``onnx`` export; else the definition with the weights. The first two need no definition.

    Raises:
        ArchiveError: weights that do not fit the network (names the first mismatches), or an
            ONNX file onnxruntime cannot load.
    """
    if weights.suffix == ".ts" and weights.is_file():
        torchscript = weights
    if torchscript is not None and torchscript.is_file():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            module: Any = torch.jit.load(str(torchscript), map_location="cpu")
        return module  # type: ignore[no-any-return]
    if weights.suffix == ".onnx":
        return OnnxNetwork(weights)
    if onnx is not None and onnx.is_file() and not weights.is_file():
        return OnnxNetwork(onnx)
    network = build_network(resolved)
    state = load_state_dict(weights)
    expected = network.state_dict()
    misfits = [
        f"{name} is {list(tensor.shape)} in the file, {list(expected[name].shape)} in the network"
        for name, tensor in state.items()
        if name in expected and tensor.shape != expected[name].shape
    ]
    if misfits:
        raise ArchiveError(
            f"{weights.name}: the weights do not fit the network ({len(misfits)} tensors of "
            f"another shape: {'; '.join(misfits[:2])} ...)"
        )
    result = network.load_state_dict(state, strict=False)
    problems = list(result.missing_keys)[:3] + list(result.unexpected_keys)[:3]
    if problems:
        raise ArchiveError(
            f"{weights.name}: the weights do not fit the network ({', '.join(problems)} ...)"
        )
    return network


class OnnxNetwork(torch.nn.Module):
    """An ONNX export (``carina export --format onnx``, Clara 4 uploads) run by onnxruntime on
    the CPU, called like the network it came from: a tensor in, a tensor out. It computes with
    as many threads as PyTorch has where it is loaded (an inference worker's share of the cores),
    so that two workers do not each use every core."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        import onnxruntime

        self.path = path
        try:
            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = torch.get_num_threads()
            options.inter_op_num_threads = 1
            self.session = onnxruntime.InferenceSession(
                str(path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise ArchiveError(f"{path.name}: onnxruntime cannot load it: {exc}") from exc
        self.input = self.session.get_inputs()[0].name

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        array = image.detach().cpu().numpy().astype("float32", copy=False)
        return torch.from_numpy(self.session.run(None, {self.input: array})[0])


def network_bytes(network: torch.nn.Module) -> int:
    """About the memory a loaded network holds: its parameters three times over (weights,
    activations and the runtime's working memory), for the server's memory budget."""
    if isinstance(network, OnnxNetwork):
        return network.path.stat().st_size * 3
    return int(sum(p.numel() * p.element_size() for p in network.parameters())) * 3
