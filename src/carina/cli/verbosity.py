"""How much the command line says besides its own output.

Normal output is Carina's: results, progress, notes, errors. Third-party warnings (MONAI's, torch's
and ignite's deprecations and ``UserWarning``s) and third-party log lines (ignite's engine INFO and
error lines, which repeat what Carina says) are kept out of it. ``carina -v`` shows the warnings and
Python logging at INFO, ``-vv`` at DEBUG. ``python -W ...`` or ``PYTHONWARNINGS`` still decide the
warnings when given.
"""

from __future__ import annotations

import logging
import sys
import warnings

from carina.cli.console import err_console

#: Loggers of libraries whose records are noise in normal output.
THIRD_PARTY_LOGGERS = ("ignite",)


def quiet() -> None:
    """Normal output: no warnings, no third-party log records."""
    if not sys.warnoptions:
        warnings.simplefilter("ignore")
    for name in THIRD_PARTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.CRITICAL + 1)


def verbose(level: int) -> None:
    """Show warnings and log records at INFO (``level`` 1) or DEBUG (2 and more), on stderr above
    any progress bar; ``level`` 0 changes nothing."""
    if level <= 0:
        return
    from rich.logging import RichHandler

    if not sys.warnoptions:
        warnings.simplefilter("default")
    handler = RichHandler(console=err_console, show_path=False, log_time_format="[%X]")
    logging.basicConfig(
        level=logging.INFO if level == 1 else logging.DEBUG,
        format="%(name)s: %(message)s",
        handlers=[handler],
        force=True,
    )
    for name in THIRD_PARTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.NOTSET)
