"""DICOM de-identification by PS3.15's Basic Application Confidentiality Profile, and the PHI
scanner that checks what is left.

- :func:`deidentify_dataset` and :func:`deidentify_files`: Table E.1-1 (shipped as data, its
  edition and source in its header) with the options of :class:`DeidOptions`; keyed pseudonyms
  (HMAC-SHA256 under the key of :func:`load_key`) for UIDs, identifiers and dates; file meta
  rebuilt; the method written into each object; a report of actions per attribute, never values.
- :func:`scan_dataset` and :func:`scan_files`: what may still identify a patient, by attribute and
  reason (``carina deid --verify``, the server's PHI guard). Identifiers and names that match
  :data:`PSEUDONYM_PATTERN` are pseudonyms, not findings.

Pixels are not cleaned: objects whose pixels may show text are reported (see
:func:`carina.deid.scan.pixel_findings`).
"""

from carina.deid.batch import DeidReport, check_output, deidentify_files
from carina.deid.dataset import DeidResult, deidentify_dataset
from carina.deid.keys import KEY_BYTES, default_key_path, load_key
from carina.deid.marks import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME
from carina.deid.options import DeidOptions, PrivateTag, load_safe_private
from carina.deid.pseudonyms import PSEUDONYM_PATTERN, Pseudonyms
from carina.deid.scan import Finding, pixel_findings, scan_dataset, scan_files
from carina.deid.table import Action, ProfileTable, load_table

__all__ = [
    "IMPLEMENTATION_CLASS_UID",
    "IMPLEMENTATION_VERSION_NAME",
    "KEY_BYTES",
    "PSEUDONYM_PATTERN",
    "Action",
    "DeidOptions",
    "DeidReport",
    "DeidResult",
    "Finding",
    "PrivateTag",
    "ProfileTable",
    "Pseudonyms",
    "check_output",
    "default_key_path",
    "deidentify_dataset",
    "deidentify_files",
    "load_key",
    "load_safe_private",
    "load_table",
    "pixel_findings",
    "scan_dataset",
    "scan_files",
]
