"""The pretrained model zoo: archives shipped as package data, installed into a workspace.

``carina zoo list | install NAME [--workspace W] | verify | build NAME``; see :mod:`.index`,
:mod:`.install` and :mod:`.build`.
"""

from carina.zoo.index import ZooEntry, load_index, zoo_archive_path
from carina.zoo.install import install_archive, install_from_url, verify_zoo

__all__ = [
    "ZooEntry",
    "install_archive",
    "install_from_url",
    "load_index",
    "verify_zoo",
    "zoo_archive_path",
]
