"""Calling ``predict``: on the loop's thread, or (``async def``) on an event loop of its own;
and checking that what it returns holds one result per input."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..dataset import Batch
from ..exceptions import InferenceError


@dataclass
class _Failed:
    """``predict`` raised on a batch (dead-lettered or stopping the loop when delivered)."""

    error: Exception


@dataclass
class _Predicting:
    """A group of batches being predicted: one outcome per batch (results or `_Failed`)."""

    batches: list[Batch]
    version: Any
    future: Future[list[Any]]


class _EventLoopThread:
    """An asyncio event loop on a thread of its own, for ``async def predict``: the inference
    loop itself stays synchronous (it blocks in the consumer and the producer)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="kafka-ml-predict", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        if not self._thread.is_alive():
            self.loop.close()


def _rows(result: Any) -> int:
    if isinstance(result, np.ndarray):
        return int(result.shape[0]) if result.ndim else 1
    if isinstance(result, Mapping):
        lengths = {len(v) for v in result.values()}
        if len(lengths) != 1:
            raise InferenceError(f"predict returned columns of different lengths {sorted(lengths)}")
        return lengths.pop()
    num_rows = getattr(result, "num_rows", None)
    if num_rows is not None:
        return int(num_rows)
    if hasattr(result, "__arrow_c_stream__") or hasattr(result, "__arrow_c_array__"):
        import pyarrow as pa

        return int(pa.table(result).num_rows)
    raise InferenceError(
        f"predict returned {type(result).__name__}: "
        "expected a dict of arrays, a NumPy array or an Arrow table"
    )


def _result_data(result: Any, n: int) -> Any:
    """``predict``'s output, checked to hold one result per input."""
    rows = _rows(result)
    if rows != n:
        raise InferenceError(f"predict returned {rows} results for a batch of {n} inputs")
    if isinstance(result, np.ndarray) and result.ndim == 1:
        return {"prediction": result}
    return result
