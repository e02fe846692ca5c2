"""Keyed, deterministic pseudonyms: UIDs, identifiers and a date offset per patient.

Every pseudonym is an HMAC-SHA256 of the original under a site's secret key: the same key gives
the same pseudonyms on every machine and in every run (series de-identified apart still link up),
and without the key nobody can recompute them from the originals, as a plain hash would allow.

- A UID becomes ``2.25.`` and the integer of the first 128 bits of HMAC(key, UID).
- A patient ID becomes ``PAT-`` and 12 base32 letters of HMAC(key, ``pid:`` + issuer + ID); the
  patient's name becomes the same pseudonym. Accession numbers (``ACC-``), study IDs (``STU-``),
  other identifiers (``ID-``) and other people's names (``PN-``) get theirs the same way. All of
  them match :data:`PSEUDONYM_PATTERN`, which the PHI scanner accepts as not identifying.
- Dates move back by one offset per patient, 365 to 730 days, from HMAC(key, ``date:`` + ID), so
  intervals within a patient's record survive.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import re
from dataclasses import dataclass

#: Every identifier or name pseudonym Carina writes, and nothing a hospital system issues.
PSEUDONYM_PATTERN = re.compile(r"(?:PAT|ACC|STU|ID|PN)-[A-Z2-7]{12}")
#: Days a patient's dates move back: at least a year, at most two.
MIN_OFFSET_DAYS = 365
MAX_OFFSET_DAYS = 730
_DA = re.compile(r"(\d{4})\.?(\d{2})\.?(\d{2})")
_DT = re.compile(r"(\d{4})(\d{2})?(\d{2})?(.*)")


@dataclass(frozen=True)
class Pseudonyms:
    """The pseudonyms of one key.

    Attributes:
        key: the secret (32 bytes from :func:`carina.deid.load_key`).
    """

    key: bytes

    def digest(self, message: str) -> bytes:
        """HMAC-SHA256(key, message)."""
        return hmac.new(self.key, message.encode("utf-8"), hashlib.sha256).digest()

    def uid(self, original: str) -> str:
        """The pseudonym UID of ``original``: ``2.25.<128-bit integer>`` (at most 44 chars)."""
        return "2.25." + str(int.from_bytes(self.digest(original)[:16], "big"))

    def code(self, prefix: str, message: str) -> str:
        """``prefix-`` and 12 base32 letters of HMAC(key, message) (15 or 16 characters: fits
        the 16 of SH)."""
        letters = base64.b32encode(self.digest(message)).decode("ascii")
        return f"{prefix}-{letters[:12]}"

    def patient(self, patient_id: str, issuer: str = "") -> str:
        """The pseudonym of a patient: their new PatientID and PatientName."""
        return self.code("PAT", "pid:" + issuer + patient_id)

    def offset_days(self, patient_id: str) -> int:
        """How many days this patient's dates move back (365 to 730)."""
        span = MAX_OFFSET_DAYS - MIN_OFFSET_DAYS + 1
        return MIN_OFFSET_DAYS + int.from_bytes(self.digest("date:" + patient_id)[:8]) % span

    def fingerprint(self) -> str:
        """A short name of the key that reveals nothing of it (to tell two keys apart)."""
        return self.digest("carina key fingerprint").hex()[:12]


def shift_date(value: str, days: int) -> str:
    """A DA value ``days`` earlier (``YYYYMMDD``; ACR-NEMA's ``YYYY.MM.DD`` is read too).

    Raises:
        ValueError: not a date.
    """
    match = _DA.fullmatch(value.strip())
    if match is None:
        raise ValueError("not a DA value")
    day = dt.date(int(match[1]), int(match[2]), int(match[3])) - dt.timedelta(days=days)
    return day.strftime("%Y%m%d")


def shift_datetime(value: str, days: int) -> str:
    """A DT value ``days`` earlier, at the same precision; the time of day and the UTC offset
    are kept (whole days move).

    Raises:
        ValueError: not a date and time.
    """
    match = _DT.fullmatch(value.strip())
    if match is None:
        raise ValueError("not a DT value")
    year, month, day, rest = match[1], match[2], match[3], match[4]
    if day is None and rest:
        raise ValueError("not a DT value")
    moved = dt.date(int(year), int(month or 1), int(day or 1)) - dt.timedelta(days=days)
    digits = moved.strftime("%Y%m%d")[: 4 + (2 if month else 0) + (2 if day else 0)]
    return digits + rest


def year_of_date(value: str) -> str:
    """A DA value reduced to its year (``YYYY0101``), as HIPAA Safe Harbor allows.

    Raises:
        ValueError: not a date.
    """
    match = _DA.fullmatch(value.strip())
    if match is None:
        raise ValueError("not a DA value")
    return f"{match[1]}0101"


def year_of_datetime(value: str) -> str:
    """A DT value reduced to its year (``YYYY``: DT allows that precision).

    Raises:
        ValueError: not a date and time.
    """
    match = _DT.fullmatch(value.strip())
    if match is None:
        raise ValueError("not a DT value")
    return match[1]
