"""The consoles the command line prints to: results on stdout, errors and progress on stderr."""

from __future__ import annotations

from rich.console import Console

console = Console()
err_console = Console(stderr=True)
