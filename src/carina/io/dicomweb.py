"""A DICOMweb client: QIDO-RS (search), WADO-RS (retrieve) and STOW-RS (store) over httpx.

What Carina's DICOMweb datastore speaks to a PACS (Orthanc, dcm4chee, a cloud healthcare API):
studies and series are searched as DICOM JSON, a series is retrieved as ``multipart/related``
Part 10 instances, and results (DICOM SEG) are stored the same way. Basic or bearer
authentication; time-outs; idempotent requests (searches, retrieves) retried on connection
errors and 502/503/504 with backoff. A PACS that is down or slow is reported as
:class:`~carina.errors.UpstreamError` (HTTP 502) or :class:`~carina.errors.UpstreamTimeoutError`
(504), naming the PACS but never a patient attribute.
"""

from __future__ import annotations

import io
import re
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from carina.errors import NotFoundError, UpstreamError, UpstreamTimeoutError

_DICOM = "application/dicom"
_RETRIED = (502, 503, 504)


@dataclass(frozen=True)
class DicomwebAuth:
    """How to sign in to the PACS: ``basic`` (user and password) or ``bearer`` (a token)."""

    user: str = ""
    password: str = ""
    token: str = ""

    def apply(self, headers: dict[str, str]) -> httpx.Auth | None:
        """The httpx auth of basic credentials; a bearer token goes into ``headers``."""
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
            return None
        return httpx.BasicAuth(self.user, self.password) if self.user else None


class DicomwebClient:
    """A DICOMweb service at ``url`` (its root, e.g. ``https://pacs/dicom-web``).

    Args:
        url: the service root (``dicomweb+`` prefixes are removed).
        auth: credentials, if the PACS asks for them.
        timeout: seconds for each request (connect, read, write).
        retries: extra attempts of an idempotent request after a connection error or a 502/503/504.
    """

    def __init__(
        self,
        url: str,
        *,
        auth: DicomwebAuth | None = None,
        timeout: float = 30.0,
        retries: int = 2,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = url.removeprefix("dicomweb+").rstrip("/")
        self.retries = retries
        self._auth, self._timeout, self._transport = auth or DicomwebAuth(), timeout, transport
        self._connection: httpx.Client | None = None
        self._lock = threading.Lock()

    @property
    def _http(self) -> httpx.Client:
        """The connection pool, opened on first use (and again after :meth:`close`)."""
        with self._lock:
            if self._connection is None:
                headers: dict[str, str] = {}
                basic = self._auth.apply(headers)
                self._connection = httpx.Client(
                    headers=headers, auth=basic, timeout=self._timeout, transport=self._transport
                )
            return self._connection

    def close(self) -> None:
        """Close the connections (a later request opens new ones)."""
        with self._lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None

    def __enter__(self) -> DicomwebClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- QIDO-RS ----------------------------------------------------------------------------------

    def search_studies(self, **filters: str) -> list[Any]:
        """Studies matching ``filters`` (DICOM keywords), as pydicom datasets."""
        return self._search("/studies", filters)

    def search_series(self, study: str | None = None, **filters: str) -> list[Any]:
        """Series (of one study, or any) matching ``filters``, as pydicom datasets."""
        path = f"/studies/{_uid(study)}/series" if study else "/series"
        return self._search(path, filters)

    def search_instances(self, study: str, series: str) -> list[Any]:
        """The instances of one series, as pydicom datasets."""
        return self._search(f"/studies/{_uid(study)}/series/{_uid(series)}/instances", {})

    # -- WADO-RS ----------------------------------------------------------------------------------

    def retrieve_series(self, study: str, series: str) -> list[Any]:
        """Every instance of a series, as pydicom datasets.

        Raises:
            NotFoundError: the PACS has no such series.
            UpstreamError: the answer is not a multipart of DICOM instances.
        """
        return [_read_part(part) for part in self.retrieve_series_files(study, series)]

    def retrieve_series_files(self, study: str, series: str) -> list[bytes]:
        """Every instance of a series as the Part 10 bytes the PACS sent."""
        accept = f'multipart/related; type="{_DICOM}"; transfer-syntax=*'
        path = f"/studies/{_uid(study)}/series/{_uid(series)}"
        answer = self._request("GET", path, headers={"Accept": accept})
        return list(_parts(answer))

    # -- STOW-RS ----------------------------------------------------------------------------------

    def store(self, files: Sequence[bytes | Path]) -> None:
        """Store Part 10 DICOM files (bytes, or paths) in one request.

        Raises:
            UpstreamError: the PACS refused some or all of them (its failure reasons named).
        """
        boundary = uuid.uuid4().hex
        body = io.BytesIO()
        for item in files:
            data = item.read_bytes() if isinstance(item, Path) else item
            body.write(f"--{boundary}\r\nContent-Type: {_DICOM}\r\n\r\n".encode())
            body.write(data)
            body.write(b"\r\n")
        body.write(f"--{boundary}--\r\n".encode())
        content_type = f'multipart/related; type="{_DICOM}"; boundary={boundary}'
        answer = self._request(
            "POST",
            "/studies",
            content=body.getvalue(),
            headers={"Content-Type": content_type, "Accept": "application/dicom+json"},
            retry=False,
        )
        failed = _failures(answer)
        if failed:
            raise UpstreamError(f"the DICOMweb server {self.url} did not store {failed}")

    # -- plumbing ---------------------------------------------------------------------------------

    def _search(self, path: str, filters: dict[str, str]) -> list[Any]:
        import pydicom

        answer = self._request(
            "GET", path, params=filters, headers={"Accept": "application/dicom+json"}
        )
        if answer.status_code == 204 or not answer.content:
            return []
        try:
            items = answer.json()
            return [pydicom.Dataset.from_json(item) for item in items]
        except (ValueError, TypeError, KeyError) as exc:
            raise UpstreamError(f"the DICOMweb server {self.url} answered no DICOM JSON") from exc

    def _request(
        self, method: str, path: str, *, retry: bool = True, **kwargs: Any
    ) -> httpx.Response:
        """One request, retried (idempotent ones) after connection errors and 502/503/504.

        Raises:
            NotFoundError, UpstreamError, UpstreamTimeoutError: as the module says.
        """
        url = f"{self.url}{path}"
        attempts = 1 + (self.retries if retry else 0)
        for attempt in range(attempts):
            last = attempt == attempts - 1
            try:
                answer = self._http.request(method, url, **kwargs)
            except httpx.TimeoutException as exc:
                if last:
                    raise UpstreamTimeoutError(
                        f"the DICOMweb server {self.url} did not answer in time"
                    ) from exc
            except httpx.TransportError as exc:
                if last:
                    raise UpstreamError(
                        f"the DICOMweb server {self.url} cannot be reached ({type(exc).__name__})"
                    ) from exc
            else:
                if answer.status_code not in _RETRIED or last:
                    return _checked(answer, self.url)
            time.sleep(min(0.2 * 2**attempt, 2.0))
        raise AssertionError("unreachable")  # pragma: no cover


def _checked(answer: httpx.Response, url: str) -> httpx.Response:
    status = answer.status_code
    if status in (200, 202, 204) or (status == 409 and answer.request.method == "POST"):
        return answer  # STOW answers 409 with the failed instances listed
    if status == 404:
        raise NotFoundError(f"the DICOMweb server {url} has no such study, series or instance")
    if status in (401, 403):
        raise UpstreamError(f"the DICOMweb server {url} refused Carina's credentials ({status})")
    if status == 504:
        raise UpstreamTimeoutError(f"the DICOMweb server {url} timed out (504)")
    raise UpstreamError(f"the DICOMweb server {url} answered HTTP {status}")


def _uid(value: str | None) -> str:
    if not value or not re.fullmatch(r"[0-9.]{1,64}", value):
        raise NotFoundError("not a DICOM UID")
    return value


def _parts(answer: httpx.Response) -> Iterator[bytes]:
    """The bodies of a ``multipart/related`` answer."""
    match = re.search(r'boundary="?([^";]+)"?', answer.headers.get("content-type", ""))
    if not match:
        raise UpstreamError("the DICOMweb server answered no multipart")
    delimiter = b"--" + match[1].encode()
    for chunk in answer.content.split(delimiter)[1:]:
        if chunk.startswith(b"--"):
            break
        _, _, body = chunk.partition(b"\r\n\r\n")
        yield body[:-2] if body.endswith(b"\r\n") else body


def _read_part(data: bytes) -> Any:
    import pydicom

    try:
        return pydicom.dcmread(io.BytesIO(data))
    except Exception as exc:  # pydicom raises many kinds on a broken part
        raise UpstreamError(f"the DICOMweb server sent an unreadable instance ({exc})") from exc


def _failures(answer: httpx.Response) -> str:
    """What a STOW-RS answer says was not stored ("" when everything was)."""
    if answer.status_code in (200, 204) or not answer.content:
        return ""
    try:
        body = answer.json()
    except ValueError:
        return f"(HTTP {answer.status_code})"
    failed = body.get("00081198", {}).get("Value", []) if isinstance(body, dict) else []
    return f"{len(failed)} instance(s) (HTTP {answer.status_code})" if failed else ""
