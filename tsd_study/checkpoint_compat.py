"""Let mmengine 0.10 checkpoints load under torch >= 2.6, whose ``torch.load`` defaults to ``weights_only=True``.

Besides tensors, mmengine's checkpoints hold its ``HistoryBuffer`` (the message hub's logs), numpy arrays and
scalars, and bound methods of those buffers, which pickle as ``getattr(buffer, 'min')``. Rather than turning
weights_only off, this allows exactly those globals, so resume, ``load_from`` and ``tsd-study test`` work with no
environment variable. Allowing ``getattr`` lets the restricted unpickler look attributes up on objects it has built;
it still calls nothing but allow-listed callables. Importing the module is enough (``tsd_study.models`` does).
"""
from __future__ import annotations

import numpy as np
import torch
from mmengine.logging import HistoryBuffer


def checkpoint_globals() -> list[type | object]:
    """The non-tensor classes and functions found in mmengine checkpoints."""
    numpy_dtypes = [getattr(np.dtypes, name) for name in np.dtypes.__all__]
    return [HistoryBuffer, getattr, np.ndarray, np.dtype, np._core.multiarray._reconstruct,
            np._core.multiarray.scalar, *numpy_dtypes]


torch.serialization.add_safe_globals(checkpoint_globals())
