"""The model store: archives under ``W/models/<name>/``, their entries, and the loaded networks.

Every replica reads the same folder (on AWS an EFS mount), so nothing about which models exist is
kept in memory beyond a cache keyed by each archive's file signature: a model installed, replaced
or deleted through one server process is seen by every other on its next request. Loaded networks
stay in an LRU bounded by a memory budget and are reloaded when their archive's files change.

Listing models reads only ``config_aiaa.json`` (no torch, no MONAI), so a server is ready in well
under a second; networks load on their first request.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import tempfile
import threading
import uuid
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from carina.archive.layout import find_root
from carina.archive.pack import install_folder, unpack_archive
from carina.archive.schema import ModelType
from carina.errors import ArchiveError, ConfigError, ModelNotFound, RequestError
from carina.io.atomic import atomic_write_bytes
from carina.schemas import ModelEntry

log = logging.getLogger(__name__)

#: Model names: what ``model=`` carries and the folder name under ``models/``.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
#: Files whose change means the archive changed (reload the network).
_WATCHED = (
    "config/config_aiaa.json",
    "config/config_train.json",
    "config/environment.json",
    "models/model.pt",
    "models/model.ts",
    "configs/metadata.json",
    "configs/inference.json",
)
#: Model files of TensorFlow-era Clara archives, which a PyTorch server cannot run.
_TENSORFLOW = (".pb", ".index", ".meta", ".data-00000-of-00001", ".savedmodel")

Signature = tuple[tuple[int, int], ...]


def check_model_name(name: str) -> str:
    """``name`` if it is a safe model name (letters, digits, ``_ . -``; no path), else an error.

    Raises:
        RequestError: an empty, too long or unsafe name (``..``, ``/``, ``\\``).
    """
    if not _NAME.fullmatch(name) or ".." in name:
        raise RequestError(
            f"invalid model name {name[:64]!r}: use letters, digits, '_', '.' and '-' "
            "(at most 128, starting with a letter or digit)"
        )
    return name


def entry_from_config(name: str, config: dict[str, Any], *, file: str) -> ModelEntry:
    """The ``/v1/models`` entry of a serving config (Carina, Clara 3.x or 4.x), per spec 5.3.

    Raises:
        ConfigError: no known ``type`` or no ``labels`` list.
    """
    kind = str(config.get("type", "")).lower()
    if kind not in set(ModelType):
        raise ConfigError(file, "type", f"must be one of {', '.join(ModelType)}, not {kind!r}")
    labels = config.get("labels", [])
    if not isinstance(labels, list):
        raise ConfigError(file, "labels", "must be a list of names")
    inference = config.get("inference") if isinstance(config.get("inference"), dict) else {}
    extra: dict[str, Any] = {}
    for key in ("meta_data", "additional_info"):
        for source in (config.get(key), (inference or {}).get(key)):
            if isinstance(source, dict):
                extra.update(source)
    entry: dict[str, Any] = {
        "name": name,
        "type": kind,
        "labels": [str(label) for label in labels],
        "description": str(config.get("description", "")),
        "version": str(config.get("version", "1")),
    }
    roi = config.get("roi")
    if kind == ModelType.ANNOTATION:
        entry["padding"] = config.get("padding") if config.get("padding") is not None else 20
        entry["roi"] = roi or [128, 128, 128]
        entry["sigma"] = config.get("sigma") if config.get("sigma") is not None else 3.0
    if kind in (ModelType.DEEPGROW, ModelType.PIPELINE):
        entry["deepgrow"] = _deepgrow_kind(config, extra, roi)
    for key, value in extra.items():
        entry.setdefault(key, value)
    if "deepgrow" in extra:
        entry["deepgrow"] = _deepgrow_kind(config, extra, roi)
    return ModelEntry.model_validate(entry)


def _deepgrow_kind(config: dict[str, Any], extra: dict[str, Any], roi: Any) -> str:
    declared = config.get("deepgrow") or extra.get("deepgrow")
    if isinstance(declared, str) and declared.upper() in ("2D", "3D"):
        return declared.upper()
    if isinstance(roi, list) and roi:
        return "2D" if len(roi) == 2 else "3D"
    for item in config.get("pre_transforms") or []:
        if isinstance(item, dict) and str(item.get("name", "")).endswith("AddGuidanceFromPointsd"):
            dims = (item.get("args") or {}).get("dimensions")
            return "2D" if dims == 2 else "3D"
    return "3D"


@dataclass
class _Known:
    signature: Signature
    entry: ModelEntry | None
    problem: str | None


@dataclass
class _Loaded:
    signature: Signature
    model: Any
    nbytes: int


class ModelRegistry:
    """The archives under ``models`` and an LRU of their loaded predictors.

    Args:
        models: the workspace's ``models/`` folder.
        memory_budget: bytes the loaded networks may take; the least recently used go past it.
        device: where networks run (None: CUDA when present).
        max_bytes: the largest unzipped upload accepted.
    """

    def __init__(
        self, models: Path, *, memory_budget: int, device: str | None, max_bytes: int
    ) -> None:
        self.models = models
        self.memory_budget = memory_budget
        self.device = device
        self.max_bytes = max_bytes
        self._known: dict[str, _Known] = {}
        self._loaded: OrderedDict[str, _Loaded] = OrderedDict()
        self._lock = threading.RLock()
        self._load_locks: dict[str, threading.Lock] = {}

    # -- listing ---------------------------------------------------------------------------------

    def entries(self) -> list[ModelEntry]:
        """Every servable model, sorted by name (broken archives are left out and logged)."""
        names = sorted(
            p.name
            for p in _list_dir(self.models)
            if not p.name.startswith(".") and _NAME.fullmatch(p.name) and p.is_dir()
        )
        found = []
        with self._lock:
            for name in set(self._known) - set(names):
                del self._known[name]
        for name in names:
            known = self._refresh(name)
            if known is not None and known.entry is not None:
                found.append(known.entry)
        return found

    def entry(self, name: str) -> ModelEntry:
        """The entry of one model.

        Raises:
            ModelNotFound: no such model, or its archive is broken (the reason is given).
        """
        entry, _ = self._servable(name)
        return entry

    def _servable(self, name: str) -> tuple[ModelEntry, Signature]:
        """The entry of a servable model and the file signature it was read at."""
        check_model_name(name)
        known = self._refresh(name)
        if known is None:
            raise ModelNotFound(f"model {name!r} not found")
        if known.entry is None:
            raise ModelNotFound(f"model {name!r} cannot be served: {known.problem}")
        return known.entry, known.signature

    def loaded_count(self) -> int:
        """How many networks are in memory."""
        with self._lock:
            return len(self._loaded)

    def config(self, name: str) -> dict[str, Any]:
        """The model's ``config_aiaa.json`` as stored.

        Raises:
            ModelNotFound: no such model.
        """
        self.entry(name)
        path = self._root(name) / "config" / "config_aiaa.json"
        if not path.is_file():
            return {}
        loaded: dict[str, Any] = json.loads(path.read_text())
        return loaded

    def _root(self, name: str) -> Path:
        return find_root(self.models / name)

    def _refresh(self, name: str) -> _Known | None:
        folder = self.models / name
        if not folder.is_dir():
            with self._lock:
                self._known.pop(name, None)
            return None
        signature = _signature(folder)
        with self._lock:
            known = self._known.get(name)
            if known is not None and known.signature == signature:
                return known
        try:
            entry, problem = _read_entry(find_root(folder), name), None
        except (ConfigError, ArchiveError, OSError, ValueError) as exc:
            entry, problem = None, str(exc)
            log.warning("model archive cannot be served", extra={"model": name, "reason": problem})
        known = _Known(signature, entry, problem)
        with self._lock:
            self._known[name] = known
        return known

    # -- loading ---------------------------------------------------------------------------------

    def predictor(self, name: str) -> Any:
        """The loaded predictor of a model (a ``Predictor`` or an ``InteractivePredictor``).

        Loads on first use and after the archive changed; evicts least recently used networks
        past the memory budget.

        Raises:
            ModelNotFound: no such model.
            ConfigError, ArchiveError: the archive cannot be loaded.
        """
        _, signature = self._servable(name)
        with self._lock:
            loaded = self._loaded.get(name)
            if loaded is not None and loaded.signature == signature:
                self._loaded.move_to_end(name)
                return loaded.model
            load_lock = self._load_locks.setdefault(name, threading.Lock())
        with load_lock:
            with self._lock:
                loaded = self._loaded.get(name)
                if loaded is not None and loaded.signature == signature:
                    return loaded.model
            model = build_predictor(self._root(name), device=self.device, trusted=True)
            nbytes = _network_bytes(model)
            with self._lock:
                self._loaded[name] = _Loaded(signature, model, nbytes)
                self._loaded.move_to_end(name)
                self._evict(keep=name)
            log.info("model loaded", extra={"model": name, "mib": round(nbytes / 2**20, 1)})
            return model

    def _evict(self, *, keep: str) -> None:
        while sum(m.nbytes for m in self._loaded.values()) > self.memory_budget:
            oldest = next(iter(self._loaded))
            if oldest == keep:
                break
            del self._loaded[oldest]
            log.info("model unloaded (memory budget)", extra={"model": oldest})

    # -- admin -----------------------------------------------------------------------------------

    def install_zip(self, name: str, zip_path: Path) -> ModelEntry:
        """Install (or replace) ``name`` from an uploaded archive zip, after validating it.

        The zip is unpacked (zip-slip and size checked) into a hidden staging folder, opened as
        an untrusted archive (code refused), its network built with its weights; only then does
        it replace the installed model, in one rename.

        Raises:
            RequestError, ArchiveError, ConfigError, UntrustedCodeError: nothing was installed.
        """
        check_model_name(name)
        if not zipfile.is_zipfile(zip_path):
            raise RequestError("data: not a zip file; upload an archive zip, or config + data")
        with self._staging(name) as staging:
            unpacked = unpack_archive(zip_path, staging / name, max_bytes=self.max_bytes)
            return self._install(name, unpacked)

    def install_files(
        self, name: str, config: bytes, model_file: Path | None, model_filename: str
    ) -> ModelEntry:
        """Install ``name`` from a ``config_aiaa.json`` and a model file (TorchScript or weights).

        Raises:
            RequestError, ConfigError, ArchiveError: nothing was installed.
        """
        check_model_name(name)
        lowered = model_filename.lower()
        if lowered.endswith(_TENSORFLOW) or lowered.endswith(".trt.pb"):
            raise RequestError(
                f"{model_filename}: a TensorFlow model (Clara 3.x) cannot run in this PyTorch "
                "server; retrain or export it as TorchScript (model.ts) or a state dict (model.pt)"
            )
        parsed = _config_object(config)
        with self._staging(name) as staging:
            root = staging / name
            (root / "config").mkdir(parents=True)
            (root / "models").mkdir()
            (root / "config" / "config_aiaa.json").write_text(json.dumps(parsed, indent=2))
            if model_file is not None:
                target = "model.ts" if _is_torchscript(model_file) else "model.pt"
                shutil.copyfile(model_file, root / "models" / target)
            return self._install(name, root)

    def patch_config(self, name: str, config: dict[str, Any]) -> ModelEntry:
        """Replace the model's ``config_aiaa.json`` and keep its weights (validated first).

        Raises:
            ModelNotFound: no such model.
            ConfigError, ArchiveError: the new config does not load; the old one stays.
        """
        self.entry(name)
        with self._staging(name) as staging:
            root = staging / name
            shutil.copytree(self._root(name), root)
            atomic_write_bytes(
                root / "config" / "config_aiaa.json", json.dumps(config, indent=2).encode()
            )
            return self._install(name, root)

    def delete(self, name: str) -> ModelEntry:
        """Unload and remove a model; returns its last entry.

        Raises:
            ModelNotFound: no such model.
        """
        check_model_name(name)
        folder = self.models / name
        if not folder.is_dir():
            raise ModelNotFound(f"model {name!r} not found")
        known = self._refresh(name)
        entry = known.entry if known and known.entry else ModelEntry(name=name, type="others")
        retired = self.models / f".{name}.deleted-{uuid.uuid4().hex}"
        folder.rename(retired)
        shutil.rmtree(retired, ignore_errors=True)
        with self._lock:
            self._loaded.pop(name, None)
            self._known.pop(name, None)
        log.info("model deleted", extra={"model": name})
        return entry

    def _install(self, name: str, root: Path) -> ModelEntry:
        entry = _read_entry(find_root(root), name)
        build_predictor(find_root(root), device="cpu", trusted=False)
        install_folder(find_root(root), self.models, name, copy=False)
        with self._lock:
            self._loaded.pop(name, None)
        log.info("model installed", extra={"model": name})
        return entry

    def _staging(self, name: str) -> _Staging:
        self.models.mkdir(parents=True, exist_ok=True)
        return _Staging(Path(tempfile.mkdtemp(prefix=f".{name}.upload-", dir=self.models)))


class _Staging:
    """A hidden folder under ``models/`` removed on exit, whatever happened."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __enter__(self) -> Path:
        return self.path

    def __exit__(self, *exc: object) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def build_predictor(root: Path, *, device: str | None, trusted: bool) -> Any:
    """The predictor of the archive at ``root`` for its model type.

    Raises:
        ConfigError, ArchiveError, UntrustedCodeError: the archive cannot be served.
    """
    from carina.archive import Archive
    from carina.engine.predict import Predictor
    from carina.interactive.predict import InteractivePredictor

    archive = Archive.open(root, trusted=trusted)
    kind = archive.serving_config().settings.type
    if kind in (ModelType.DEEPGROW, ModelType.ANNOTATION):
        return InteractivePredictor.from_archive(archive, device=device)
    if kind not in (ModelType.SEGMENTATION, ModelType.OTHERS):
        raise ArchiveError(
            f"{archive.name}: {kind} models are not supported by this server "
            "(it serves segmentation, annotation and deepgrow models)"
        )
    return Predictor.from_archive(archive, device=device)


def _read_entry(root: Path, name: str) -> ModelEntry:
    serving = root / "config" / "config_aiaa.json"
    if serving.is_file():
        return entry_from_config(name, _config_object(serving.read_bytes()), file=serving.name)
    metadata = root / "configs" / "metadata.json"
    if metadata.is_file():
        meta = _config_object(metadata.read_bytes(), file="metadata.json")
        outputs = (meta.get("network_data_format") or {}).get("outputs") or {}
        first: dict[str, Any] = next(iter(outputs.values()), {}) or {}
        channels = first.get("channel_def") or {}
        labels = [v for k, v in sorted(channels.items(), key=lambda kv: int(kv[0])) if int(k) > 0]
        return ModelEntry(
            name=name,
            type=ModelType.SEGMENTATION,
            labels=labels,
            description=str(meta.get("description", "")),
            version=str(meta.get("version", "1")),
        )
    raise ArchiveError(f"{name}: no config/config_aiaa.json (not a model archive)")


def _config_object(data: bytes, *, file: str = "config_aiaa.json") -> dict[str, Any]:
    try:
        value = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(file, "", f"not valid JSON ({exc})") from exc
    if not isinstance(value, dict):
        raise ConfigError(file, "", "must be a JSON object")
    return value


def _signature(folder: Path) -> Signature:
    """Inode and mtime of the folder and its watched files: any install, patch or delete shows."""
    parts = []
    for path in (folder, *(folder / p for p in _WATCHED)):
        try:
            stat = path.stat()
            parts.append((stat.st_ino, stat.st_mtime_ns))
        except OSError:
            parts.append((0, 0))
    return tuple(parts)


def _list_dir(folder: Path) -> list[Path]:
    try:
        return list(folder.iterdir())
    except FileNotFoundError:
        return []


def _is_torchscript(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as archive:
            return any("/code/" in n or n.endswith("constants.pkl") for n in archive.namelist())
    except zipfile.BadZipFile:
        return False


def _network_bytes(model: Any) -> int:
    network = getattr(model, "network", None)
    if network is None:
        return 0
    return int(sum(p.numel() * p.element_size() for p in network.parameters())) * 3
