"""``python -m carina.server.healthcheck``: exit 0 when the local server answers ``/health/live``.

The container's HEALTHCHECK. It needs no curl in the image, and follows the server's scheme: plain
HTTP, or HTTPS with the container's own (possibly self-signed) certificate, which is not verified
on the loopback.
"""

from __future__ import annotations

import http.client
import os
import ssl
import sys


def live(port: int, *, timeout: float = 4.0) -> bool:
    """True when ``/health/live`` on 127.0.0.1:``port`` answers 200 over HTTP or HTTPS."""
    unverified = ssl.create_default_context()
    unverified.check_hostname = False
    unverified.verify_mode = ssl.CERT_NONE
    connections: list[http.client.HTTPConnection] = [
        http.client.HTTPConnection("127.0.0.1", port, timeout=timeout),
        http.client.HTTPSConnection("127.0.0.1", port, timeout=timeout, context=unverified),
    ]
    for connection in connections:
        try:
            connection.request("GET", "/health/live")
            if connection.getresponse().status == 200:
                return True
        except (OSError, http.client.HTTPException):
            continue
        finally:
            connection.close()
    return False


def main() -> None:
    """Check the port in ``CARINA_PORT`` (default 5000); exit status 0 if live, else 1."""
    sys.exit(0 if live(int(os.environ.get("CARINA_PORT", "5000"))) else 1)


if __name__ == "__main__":
    main()
