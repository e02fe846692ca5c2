"""The secret key of a site's pseudonyms: 32 random bytes in a file only its owner can read.

The key never belongs in a repository or an image. Whoever holds it can link de-identified data
to the pseudonyms of known patients, so it is kept like a password; whoever loses it cannot give
new data the pseudonyms of earlier runs. The file holds 64 hexadecimal digits and a newline.
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

from carina.errors import DeidentificationError

#: The bytes of a new key, and the fewest a key file may hold.
KEY_BYTES = 32


def default_key_path() -> Path:
    """``~/.config/carina/deid.key``: where ``carina deid`` keeps its key unless told."""
    return Path.home() / ".config" / "carina" / "deid.key"


def load_key(path: Path, *, create: bool = False) -> bytes:
    """The key in ``path``; with ``create``, a missing file is made first (32 random bytes,
    mode 0600; a missing parent folder is made with mode 0700).

    Raises:
        DeidentificationError: no key file (and not ``create``), a file that the group or others
            may read, or one that does not hold a key of 32 bytes; the message says how to fix it.
    """
    if not path.exists():
        if not create:
            raise DeidentificationError(
                f"key file {path.name}: not found (carina deid makes one on first use; restore "
                "the site's key to keep its pseudonyms)"
            )
        return _create(path)
    info = path.stat()
    if not stat.S_ISREG(info.st_mode):
        raise DeidentificationError(f"key file {path.name}: not a regular file")
    if info.st_mode & 0o077:
        raise DeidentificationError(
            f"key file {path.name}: readable by others (mode {stat.S_IMODE(info.st_mode):04o}); "
            f"make it private with `chmod 600 {path.name}`"
        )
    text = path.read_text(errors="replace").strip()
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) < KEY_BYTES:
        raise DeidentificationError(
            f"key file {path.name}: not a key of {KEY_BYTES} bytes (64 hexadecimal digits); "
            "move it away and run carina deid again to make a new one (new pseudonyms)"
        )
    return key


def _create(path: Path) -> bytes:
    if not path.parent.exists():
        path.parent.mkdir(parents=True, mode=0o700)
        path.parent.chmod(0o700)  # mkdir's mode is filtered by the umask
    key = secrets.token_bytes(KEY_BYTES)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(descriptor, 0o600)
        os.write(descriptor, key.hex().encode("ascii") + b"\n")
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
    return key
