"""Where the workplace's test data (voc100, coco_eval_ref) is: ``../shared/data`` beside this checkout, or, for a
clone of a local checkout (``git clone . /tmp/x``, whose ``origin`` is that checkout's path), beside the checkout
it was cloned from. ``TSD_SHARED_DATA`` names another directory."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BESIDE_CHECKOUT = ROOT.parent / "shared" / "data"


def _beside_origin() -> Path | None:
    """``shared/data`` beside the local repository this checkout was cloned from, if it was."""
    origin = subprocess.run(["git", "-C", str(ROOT), "remote", "get-url", "origin"], capture_output=True, text=True,
                            check=False).stdout.strip()
    if not origin or not Path(origin).is_dir():  # no origin, or a URL
        return None
    return Path(origin).resolve().parent / "shared" / "data"


def find_shared_data() -> Path:
    """The first of TSD_SHARED_DATA, ../shared/data and the origin's ../shared/data that exists; else the path
    beside this checkout, so that whatever needs it names where it was expected."""
    if "TSD_SHARED_DATA" in os.environ:
        return Path(os.environ["TSD_SHARED_DATA"])
    for candidate in (BESIDE_CHECKOUT, _beside_origin()):
        if candidate is not None and candidate.is_dir():
            return candidate
    return BESIDE_CHECKOUT


SHARED_DATA = find_shared_data()
