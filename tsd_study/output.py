"""Process-wide output settings, kept free of heavy imports so that the CLI can apply them before anything loads."""
from __future__ import annotations

import sys


def line_buffered_output() -> None:
    """Flush stdout and stderr at every newline.

    Forked dataloader workers inherit Python's output buffers and flush their copy when they exit, which repeats
    (and reorders) buffered log text when the output is a pipe or file. With line buffering nothing waits in them.
    """
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(line_buffering=True)
