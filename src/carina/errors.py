"""The exceptions Carina raises.

Every error a user can cause derives from :class:`CarinaError`, so a command line or a server can
turn it into a clear message (or an HTTP status) in one place. Messages name the file by its base
name only, never by a full path, so that a server never leaks its folders.
"""

from __future__ import annotations

from pathlib import Path


class CarinaError(Exception):
    """Base class of every error Carina raises on purpose."""


class FileError(CarinaError):
    """An error about one file or folder: the message starts with its base name.

    Any full path inside ``reason`` (third-party libraries like to quote them) is cut down to the
    base name, so a message can be shown to a remote user.

    Args:
        path: the file or folder concerned.
        reason: what is wrong, in words a user understands.
    """

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = Path(path)
        name = self.path.name or str(self.path)
        for text in (str(self.path), str(self.path.parent) + "/"):
            if len(text) > 1:
                reason = reason.replace(text, name if text == str(self.path) else "")
        self.reason = reason
        super().__init__(f"{name}: {reason}")


class ImageReadError(FileError):
    """An image could not be read: unknown format, corrupt, truncated, inconsistent or too large."""


class ImageWriteError(FileError):
    """An image could not be written; the target path was left as it was."""


class UnsafeZipError(CarinaError):
    """A zip file holds an entry that escapes its folder, a link, or more data than allowed."""


class DatasetError(CarinaError):
    """A shipped dataset is unknown, or the package that ships its files is not installed."""


class ConfigError(CarinaError):
    """A configuration file is wrong: the message names the file and the key path.

    Args:
        file: the config file's name (``config_train.json``).
        key: the dotted key path inside it (``train.optimizer.args.lr``), or "" for the whole file.
        reason: what is wrong.
    """

    def __init__(self, file: str, key: str, reason: str) -> None:
        self.file = file
        self.key = key
        self.reason = reason
        where = f"{file}: {key}" if key else file
        super().__init__(f"{where}: {reason}")


class ArchiveError(CarinaError):
    """A model archive is missing a part, holds an unsafe entry or cannot be packed or unpacked."""


class UntrustedCodeError(ArchiveError):
    """An archive that arrived from elsewhere (an upload) contains code, which is never run.

    Attributes:
        findings: each piece of code found, as ``"where: what"``.
    """

    def __init__(self, findings: list[str]) -> None:
        self.findings = findings
        shown = "; ".join(findings[:5]) + (
            f"; and {len(findings) - 5} more" if len(findings) > 5 else ""
        )
        super().__init__(
            f"the archive contains code, which is refused for uploaded archives: {shown}"
        )


class GuidanceError(CarinaError):
    """Clicks or extreme points an interactive model cannot use (too few, outside the image)."""
