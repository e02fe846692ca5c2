"""A file server on 127.0.0.1 for the zoo download tests: HTTP Range, and a connection drop.

    python tests/zoo/range_server.py ROOT [--drop-after BYTES]

Prints its port on the first line. With ``--drop-after``, the first full-file response sends that
many bytes and closes the connection (a dropped download); later requests are served whole.
"""

from __future__ import annotations

import argparse
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def make_handler(root: Path, drop_after: int | None) -> type[BaseHTTPRequestHandler]:
    state = {"dropped": False}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = root / self.path.lstrip("/")
            if not path.is_file():
                self.send_error(404)
                return
            data = path.read_bytes()
            start = 0
            header = self.headers.get("Range")
            if header and header.startswith("bytes="):
                start = int(header[6:].split("-")[0])
                if start >= len(data):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            else:
                self.send_response(200)
            body = data[start:]
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Accept-Ranges", "bytes")
            self.end_headers()
            if drop_after is not None and not state["dropped"] and start == 0:
                state["dropped"] = True
                self.wfile.write(body[:drop_after])
                self.wfile.flush()
                self.close_connection = True
                return
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("root", type=Path)
    parser.add_argument("--drop-after", type=int, default=None)
    args = parser.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(args.root, args.drop_after))
    print(server.server_address[1], flush=True)
    sys.stdout.close()
    server.serve_forever()


if __name__ == "__main__":
    main()
