"""The model store: archives under ``W/models/<name>/``, their serving configs, and the loaded
runners.

Every replica reads the same folder (on AWS an EFS mount), so nothing about which models exist is
kept in memory beyond a cache keyed by each archive's file signature: a model installed, replaced
or deleted through one server process is seen by every other on its next request. Loaded runners
stay in an LRU bounded by a memory budget and are reloaded when their archive's files change.

Listing models reads only each archive's serving config into its typed
:class:`~carina.archive.ServingConfig` (no torch, no MONAI), so a server is ready in well under a
second; runners load on their first request, through the table of model kinds. A model is listed
only when its serving config is valid and a kind serves it; a broken one is logged and reported
(:meth:`ModelRegistry.broken`) with its config file and key.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import threading
import time
import uuid
import zipfile
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from carina.archive import Archive, ServingConfig
from carina.archive.layout import MODEL_NAME, UPLOAD_MARKER, check_model_name, find_root
from carina.archive.pack import install_folder, recover_installs, unpack_archive
from carina.errors import ArchiveError, ConfigError, ModelNotFound, RequestError
from carina.files import atomic_write_bytes, owned_folder, owner_tag, sweep_stale
from carina.kinds import KINDS, Kinds, ModelKind, Runner, kind_of, load_runner
from carina.zoo.servable import ModelCard, model_card

log = logging.getLogger(__name__)

#: Files whose change means the archive changed (reload the network).
_WATCHED = (
    "config/config_aiaa.json",
    "config/config_train.json",
    "config/environment.json",
    "models/model.pt",
    "models/model.ts",
    "models/model.onnx",
    "configs/metadata.json",
    "configs/inference.json",
    "dataset.json",
    "plans.json",
    "carina.json",
    *(f"fold_{fold}/checkpoint_final.pth" for fold in ("0", "1", "2", "3", "4", "all")),
)
#: Model files of TensorFlow-era Clara archives, which a PyTorch server cannot run.
_TENSORFLOW = (".pb", ".index", ".meta", ".data-00000-of-00001", ".savedmodel")

#: Hidden work folders under ``models/``: uploads being checked, installs and deletes under way.
_WORK_FOLDERS = (".*.upload@*", ".*.install@*", ".*.deleted@*", ".*.old@*")

Signature = tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class ModelInfo:
    """A servable model: the name it is installed under, its serving config, its kind and its
    card (what ``/v1/models`` shows: licence, where it came from)."""

    name: str
    spec: ServingConfig
    kind: ModelKind
    card: ModelCard | None = None


@dataclass(frozen=True)
class ModelIndex:
    """What is installed: the servable models (by name) and the broken archives with why."""

    models: list[ModelInfo]
    broken: dict[str, str]


@dataclass
class _Known:
    signature: Signature
    info: ModelInfo | None
    problem: str | None


@dataclass
class _Loaded:
    signature: Signature
    runner: Runner
    nbytes: int


class ModelRegistry:
    """The archives under ``folder`` and an LRU of their loaded runners.

    Args:
        folder: the workspace's ``models/`` folder.
        memory_budget: bytes the loaded networks may take; the least recently used go past it.
        device: where networks run (None: CUDA when present).
        max_bytes: the largest unzipped upload accepted.
        kinds: the model kinds served (default: every kind Carina has).
        allow_code: admin uploads may carry code (run as trusted); off, they are data only.
    """

    def __init__(
        self,
        folder: Path,
        *,
        memory_budget: int,
        device: str | None,
        max_bytes: int,
        kinds: Kinds = KINDS,
        allow_code: bool = False,
    ) -> None:
        self.folder = folder
        self.allow_code = allow_code
        self.memory_budget = memory_budget
        self.device = device
        self.max_bytes = max_bytes
        self.kinds = kinds
        self._known: dict[str, _Known] = {}
        self._loaded: OrderedDict[str, _Loaded] = OrderedDict()
        self._lock = threading.RLock()
        self._load_locks: dict[str, threading.Lock] = {}

    # -- listing ---------------------------------------------------------------------------------

    def models(self) -> list[ModelInfo]:
        """Every servable model, sorted by name (broken archives are left out and logged)."""
        return self.index().models

    def broken(self) -> dict[str, str]:
        """Each installed archive that cannot be served, with why (its config file and key)."""
        return self.index().broken

    def index(self) -> ModelIndex:
        """The servable models and the broken archives, from one look at the folder."""
        known = self._scan()
        return ModelIndex(
            models=[k.info for k in known.values() if k.info is not None],
            broken={n: k.problem for n, k in known.items() if k.info is None and k.problem},
        )

    def model(self, name: str) -> ModelInfo:
        """One servable model.

        Raises:
            ModelNotFound: no such model, or its archive is broken (the reason is given).
        """
        info, _ = self._servable(name)
        return info

    def loaded_count(self) -> int:
        """How many runners are in memory."""
        with self._lock:
            return len(self._loaded)

    def config(self, name: str) -> dict[str, Any]:
        """The model's ``config_aiaa.json`` as stored.

        Raises:
            ModelNotFound: no such model.
        """
        self.model(name)
        path = self._root(name) / "config" / "config_aiaa.json"
        if not path.is_file():
            return {}
        loaded: dict[str, Any] = json.loads(path.read_text())
        return loaded

    def _scan(self) -> dict[str, _Known]:
        """Every installed archive, refreshed, by name."""
        names = sorted(
            p.name
            for p in _list_dir(self.folder)
            if not p.name.startswith(".") and MODEL_NAME.fullmatch(p.name) and p.is_dir()
        )
        with self._lock:
            for name in set(self._known) - set(names):
                del self._known[name]
        found = {}
        for name in names:
            known = self._refresh(name)
            if known is not None:
                found[name] = known
        return found

    def _servable(self, name: str) -> tuple[ModelInfo, Signature]:
        """A servable model and the file signature it was read at."""
        check_model_name(name)
        known = self._refresh(name)
        if known is None:
            raise ModelNotFound(f"model {name!r} not found")
        if known.info is None:
            raise ModelNotFound(f"model {name!r} cannot be served: {known.problem}")
        return known.info, known.signature

    def _root(self, name: str) -> Path:
        try:
            return find_root(self.folder / name)
        except FileNotFoundError as exc:  # deleted meanwhile, maybe through another replica
            raise ModelNotFound(f"model {name!r} not found") from exc

    def _refresh(self, name: str) -> _Known | None:
        folder = self.folder / name
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
            info, problem = self._read(name, find_root(folder)), None
        except (ConfigError, ArchiveError, OSError, ValueError) as exc:
            info, problem = None, _problem(exc, name, find_root(folder))
            log.warning("model archive cannot be served", extra={"model": name, "reason": problem})
        known = _Known(signature, info, problem)
        with self._lock:
            self._known[name] = known
        return known

    def _read(self, name: str, root: Path) -> ModelInfo:
        """The model's typed serving config and kind (no torch: configs only)."""
        archive = Archive.open(root)
        spec = archive.serving_config()
        kind = kind_of(archive, spec, self.kinds)
        return ModelInfo(name, spec, kind, model_card(name, archive, spec))

    # -- loading ---------------------------------------------------------------------------------

    def runner(self, name: str) -> Runner:
        """The loaded runner of a model.

        Loads on first use and after the archive changed; evicts least recently used runners
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
                return loaded.runner
            load_lock = self._load_locks.setdefault(name, threading.Lock())
        with load_lock:
            with self._lock:
                loaded = self._loaded.get(name)
                if loaded is not None and loaded.signature == signature:
                    return loaded.runner
            try:
                runner = self._load(name)
            except (ConfigError, ArchiveError) as exc:
                self._mark_broken(name, signature, exc)
                raise
            nbytes = runner.memory_bytes()
            with self._lock:
                self._loaded[name] = _Loaded(signature, runner, nbytes)
                self._loaded.move_to_end(name)
                self._evict(keep=name)
            log.info("model loaded", extra={"model": name, "mib": round(nbytes / 2**20, 1)})
            return runner

    def _load(self, name: str) -> Runner:
        """Build a model's runner; an uploaded archive is checked as untrusted again first.

        Raises:
            ModelNotFound: the archive went away meanwhile (deleted through another replica).
        """
        folder = self.folder / name
        try:
            _, runner = load_runner(
                find_root(folder),
                device=self.device,
                trusted=self._trusted(folder),
                kinds=self.kinds,
            )
        except (ArchiveError, ConfigError, OSError) as exc:
            if not folder.is_dir():
                raise ModelNotFound(f"model {name!r} not found") from exc
            raise
        return runner

    def _mark_broken(self, name: str, signature: Signature, exc: Exception) -> None:
        """Record that a model's files (at ``signature``) do not load: ``/health`` lists it as
        broken and requests are told why until its files change."""
        try:
            problem = _problem(exc, name, find_root(self.folder / name))
        except OSError:
            return
        log.warning("model cannot be loaded", extra={"model": name, "reason": problem})
        with self._lock:
            known = self._known.get(name)
            if known is not None and known.signature == signature:
                self._known[name] = _Known(signature, None, problem)

    def _trusted(self, folder: Path) -> bool:
        """Whether an installed archive may run code: not uploaded, or uploaded with code while
        this server allows code uploads (a server started without the setting refuses it)."""
        try:
            uploaded = json.loads((folder / UPLOAD_MARKER).read_text())
        except FileNotFoundError:
            return True
        except (OSError, ValueError):
            return False
        return self.allow_code and isinstance(uploaded, dict) and uploaded.get("code") is True

    def sweep(self, *, max_age: float = 3600.0) -> list[str]:
        """Repair and remove what killed processes left under ``models/``: a replaced archive
        whose successor never arrived is put back, hidden upload, install and delete folders
        whose owner is gone are removed. Returns what was done, for the log."""
        done = [f"restored {name}" for name in recover_installs(self.folder, max_age=max_age)]
        done += [
            f"removed {path.name}"
            for path in sweep_stale(self.folder, _WORK_FOLDERS, max_age=max_age)
        ]
        if done:
            log.info("model store swept", extra={"actions": done[:20], "count": len(done)})
        return done

    def _evict(self, *, keep: str) -> None:
        while sum(m.nbytes for m in self._loaded.values()) > self.memory_budget:
            oldest = next(iter(self._loaded))
            if oldest == keep:
                break
            del self._loaded[oldest]
            log.info("model unloaded (memory budget)", extra={"model": oldest})

    # -- admin -----------------------------------------------------------------------------------

    def install_zip(self, name: str, zip_path: Path) -> ModelInfo:
        """Install (or replace) ``name`` from an uploaded archive zip, after validating it.

        The zip is unpacked (zip-slip and size checked) into a hidden staging folder, opened as
        an untrusted archive (code refused), its runner built with its weights; only then does
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
    ) -> ModelInfo:
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

    def patch_config(self, name: str, config: dict[str, Any]) -> ModelInfo:
        """Replace the model's ``config_aiaa.json`` and keep its weights (validated first).

        Raises:
            ModelNotFound: no such model.
            ConfigError, ArchiveError: the new config does not load; the old one stays.
        """
        self.model(name)
        with self._staging(name) as staging:
            root = staging / name
            shutil.copytree(self._root(name), root)
            atomic_write_bytes(
                root / "config" / "config_aiaa.json", json.dumps(config, indent=2).encode()
            )
            return self._install(name, root)

    def delete(self, name: str) -> ModelInfo | None:
        """Unload and remove a model; returns what it was (None for a broken archive).

        Raises:
            ModelNotFound: no such model.
        """
        check_model_name(name)
        folder = self.folder / name
        if not folder.is_dir():
            raise ModelNotFound(f"model {name!r} not found")
        known = self._refresh(name)
        retired = self.folder / f".{name}.deleted{owner_tag()}{uuid.uuid4().hex}"
        folder.rename(retired)
        shutil.rmtree(retired, ignore_errors=True)
        with self._lock:
            self._loaded.pop(name, None)
            self._known.pop(name, None)
        log.info("model deleted", extra={"model": name})
        return known.info if known is not None else None

    def _install(self, name: str, root: Path) -> ModelInfo:
        """Check the staged archive as an upload (code refused, runner built), then install it."""
        root = find_root(root)
        kind, runner = load_runner(root, device="cpu", trusted=self.allow_code, kinds=self.kinds)
        archive = Archive.open(root, trusted=self.allow_code)
        marker: dict[str, Any] = {"uploaded": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        if self.allow_code:
            marker["code"] = True  # the admin was allowed to upload code: it runs as trusted
        atomic_write_bytes(root / UPLOAD_MARKER, json.dumps(marker).encode())
        info = ModelInfo(name, runner.spec, kind, model_card(name, archive, runner.spec))
        install_folder(root, self.folder, name, copy=False)
        with self._lock:
            self._loaded.pop(name, None)
        log.info("model installed", extra={"model": name})
        return info

    @contextlib.contextmanager
    def _staging(self, name: str) -> Iterator[Path]:
        """A hidden folder under ``models/`` removed on exit, whatever happened."""
        path = owned_folder(self.folder, f".{name}.upload")
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)


def _problem(exc: Exception, name: str, root: Path) -> str:
    """Why an archive cannot be served, naming its config file (within the workspace) and key."""
    if isinstance(exc, ConfigError):
        where = f"models/{name}/{_config_path(root, exc.file)}"
        return f"{where}: {exc.key}: {exc.reason}" if exc.key else f"{where}: {exc.reason}"
    if isinstance(exc, OSError):
        return f"models/{name}: cannot be read ({exc.strerror or type(exc).__name__})"
    return f"models/{name}: {exc}"


def _config_path(root: Path, file: str) -> str:
    """Where a config file named in an error sits inside the archive (``config/...``)."""
    for folder in ("config", "configs"):
        if (root / folder / file).is_file():
            return f"{folder}/{file}"
    return file


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
