"""Identifying content in free text: what the PHI scanner looks for, and how the Clean
Descriptors option (113105) cleans a description instead of removing it.

Cleaning replaces, with ``***``: the names and identifiers the object itself holds (its people's
name parts, its patient IDs, accession number and study ID), ``Last^First`` names, dates, e-mail
addresses, URLs, telephone numbers, SSNs and MRN-like runs of digits. A value still matching any
pattern after that cannot be cleaned, and is removed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

#: What replaces an identifying piece of text.
REDACTED = "***"
_MONTH = r"(?:jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec)[a-z]*\.?"

#: The free-text findings (what the scanner reports) by reason, in the order they are tried.
PHI_PATTERNS: dict[str, re.Pattern[str]] = {
    "an e-mail address": re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+"),
    "an SSN": re.compile(r"(?<!\d)\d{3}-\d{2}-\d{4}(?!\d)"),
    "a telephone number": re.compile(
        r"(?<![\w.])(?:"
        # +1 555 123 4567, (555) 123-4567; 555-0142, 555.123.4567; 555 123 4567
        r"(?:\+\d{1,3}[\s.-]?|\(\d{2,4}\)\s?)\d{2,4}[\s.-]?\d{3,4}(?:[\s.-]?\d{2,4})?"
        r"|\d{3,4}[.-](?:\d{4}|\d{3,4}[.-]\d{2,4})"
        r"|\d{2,4}\s\d{3,4}\s\d{3,4}"
        r")(?![\w.])"
    ),
    "an MRN-like number": re.compile(
        r"(?i)\b(?:MRN|MR#|med(?:ical)?\s*rec(?:ord)?\s*(?:no|number|#)?)\s*[:#.]?\s*[A-Z0-9-]{3,}"
        r"|(?<![\w.])[A-Z]{0,4}[#:-]?\d{6,}(?![\w.])"
    ),
    "a Last^First name": re.compile(r"[A-Za-z][A-Za-z'-]*\^[A-Za-z][A-Za-z'^-]*"),
}
#: Dates and addresses on the web, cleaned but not reported as findings by themselves.
_CLEANED_TOO = [
    re.compile(r"(?<!\d)(?:19|20)\d{2}[-/.]?(?:0[1-9]|1[0-2])[-/.]?(?:0[1-9]|[12]\d|3[01])(?!\d)"),
    re.compile(r"(?<!\d)\d{1,2}[-/.]\d{1,2}[-/.]\d{2,4}(?!\d)"),
    re.compile(rf"(?i)\b\d{{1,2}}\s+{_MONTH}\s+\d{{2,4}}\b"),
    re.compile(rf"(?i)\b{_MONTH}\s+\d{{1,2}},?\s+\d{{4}}\b"),
    re.compile(r"(?i)\b(?:https?://|www\.)\S+"),
]


def name_parts(names: Iterable[str]) -> set[str]:
    """The words of person names (``Doe^John`` -> ``doe``, ``john``), lower-case, two letters
    or more: what a description must not mention."""
    parts = set()
    for name in names:
        for word in re.split(r"[\^=\s,]+", name):
            if len(word) >= 2 and any(ch.isalpha() for ch in word):
                parts.add(word.lower())
    return parts


def text_findings(text: str, *, names: Iterable[str] = ()) -> list[str]:
    """Why ``text`` looks identifying (reasons of :data:`PHI_PATTERNS`, and ``the name of a
    person in the object`` for a word of ``names``); empty when it does not."""
    reasons = [reason for reason, pattern in PHI_PATTERNS.items() if pattern.search(text)]
    pattern = _words(name_parts(names))
    if pattern is not None and pattern.search(text):
        reasons.append("the name of a person in the object")
    return reasons


def clean_text(text: str, *, names: Iterable[str] = (), identifiers: Iterable[str] = ()) -> str:
    """``text`` with identifying pieces replaced by :data:`REDACTED`.

    Args:
        text: a description, comment or protocol name.
        names: person names the object holds (their words are removed wherever they appear).
        identifiers: identifiers the object holds (removed wherever they appear).

    Raises:
        ValueError: the text still looks identifying after cleaning (it must then be removed).
    """
    cleaned = text
    literal = sorted({i.strip() for i in identifiers if len(i.strip()) >= 3}, key=len, reverse=True)
    if literal:
        alternatives = "|".join(re.escape(item) for item in literal)
        cleaned = re.sub(rf"(?i)(?<![\w]){alternatives}(?![\w])", REDACTED, cleaned)
    words = _words(name_parts(names))
    if words is not None:
        cleaned = words.sub(REDACTED, cleaned)
    for pattern in [*PHI_PATTERNS.values(), *_CLEANED_TOO]:
        cleaned = pattern.sub(REDACTED, cleaned)
    if text_findings(cleaned, names=names):
        raise ValueError("the text cannot be cleaned")
    return cleaned


def _words(parts: set[str]) -> re.Pattern[str] | None:
    if not parts:
        return None
    alternatives = "|".join(re.escape(p) for p in sorted(parts, key=len, reverse=True))
    return re.compile(rf"(?i)(?<![\w])(?:{alternatives})(?![\w])")
