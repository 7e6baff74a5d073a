"""How a DataLoader worker's batch reaches the main process: its numeric columns packed into one
block, which crosses through the result pipe (small batches) or torch's shared memory (large
ones). Nothing here knows about Kafka."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

# Whether a read-only array was converted yet. torch warns once per process that a tensor viewing
# read-only memory must not be written to; suppressing that costs more than the conversion, so
# only the first conversion does (torch stays silent after its one warning).
_read_only_converted = False


def _to_tensor(array: np.ndarray) -> Any:
    """A tensor sharing ``array``'s memory; strings and bytes stay NumPy arrays."""
    global _read_only_converted
    if array.dtype.kind not in "biufc":
        return array
    if not array.flags.writeable and not _read_only_converted:
        # Arrow buffers are immutable: the tensor views them read-only. torch warns that
        # writing through it would be undefined; a training step never writes its input.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            tensor = torch.from_numpy(array)
        _read_only_converted = True
        return tensor
    return torch.from_numpy(array)


# Columns packed for a worker's batch start at multiples of this many bytes (any dtype's alignment).
_PACK_ALIGN = 64

# A worker's batch of up to this many packed bytes crosses to the main process as bytes through
# the DataLoader's result pipe; a larger one through torch's shared memory. torch pays a fresh
# shared-memory segment and a file-descriptor handshake per storage; copies through the pipe
# grow with the batch and the handshake does not. `python bench/torch_bench.py --transfer-sweep`
# on the project's machine: the pipe moved 2.05x the rows/s at 80 KiB batches, 1.35x at 640 KiB,
# 0.92x at 1.25 MiB and 0.53x at 5 MiB.
_PIPE_MAX_BYTES = 1 << 20

# Where a numeric column lies in a packed block: byte offset, NumPy dtype string, shape.
_Slot = tuple[int, str, tuple[int, ...]]


def _worker_batch(
    cols: Mapping[str, np.ndarray], names: Sequence[str], pipe_max_bytes: int = _PIPE_MAX_BYTES
) -> dict[str, Any]:
    """A DataLoader worker's batch: the numeric columns copied into one block, as views of it.

    A small block is a ``bytearray`` that pickles as itself (:class:`_PipedBatch`); a large one
    is one torch storage, so torch moves it through shared memory once per batch rather than
    once per column (``pipe_max_bytes`` draws the line). Either way the batch is copied once
    here, where torch would copy it into shared memory anyway. (NumPy packs small blocks: a
    torch call costs several NumPy calls.)
    """
    slots: dict[str, _Slot] = {}
    total = 0
    for name in names:
        array = cols[name]
        if array.dtype.kind in "biufc":
            slots[name] = (total, array.dtype.str, array.shape)
            total += -(-array.nbytes // _PACK_ALIGN) * _PACK_ALIGN
    if total == 0:
        return {name: _to_tensor(cols[name]) for name in names}
    out: dict[str, Any] = {}
    if total > pipe_max_bytes:
        # Views of one torch storage, which torch shares as a whole.
        base = torch.empty(total, dtype=torch.uint8)
        for name in names:
            if name in slots:
                start, _, shape = slots[name]
                source = _to_tensor(cols[name])
                part = base[start : start + cols[name].nbytes].view(source.dtype).view(shape)
                out[name] = part.copy_(source)
            else:
                out[name] = cols[name]
        return out
    block = bytearray(total)
    for name in names:
        if name in slots:
            array = _view(block, slots[name])
            array[...] = cols[name]
            out[name] = torch.from_numpy(array)
        else:
            out[name] = cols[name]
    return _PipedBatch(out, block, slots)


def _view(block: bytearray, slot: _Slot) -> np.ndarray:
    start, dtype, shape = slot
    array: np.ndarray = np.ndarray(shape, dtype=dtype, buffer=block, offset=start)
    return array


class _PipedBatch(dict[str, Any]):
    """A worker's batch whose numeric columns are views of one ``bytearray``: it pickles as that
    block and the column layout, so it crosses to the main process through the DataLoader's
    pipe and arrives there as a plain dict of tensors viewing the received block.

    If anything replaced a packed column (a ``collate_fn``, say), it pickles as a plain dict.
    """

    def __init__(self, columns: dict[str, Any], block: bytearray, slots: dict[str, _Slot]) -> None:
        super().__init__(columns)
        self._block = block
        self._slots = slots
        self._views = {name: columns[name] for name in slots}

    def __copy__(self) -> _PipedBatch:
        # DataLoader's default_convert copies the batch and writes the same tensors back. The
        # clone keeps the original views: a column replaced before the copy stays replaced.
        clone = _PipedBatch(dict(self), self._block, self._slots)
        clone._views = self._views
        return clone

    def _intact(self) -> bool:
        return all(dict.get(self, name) is view for name, view in self._views.items())

    def __reduce__(self) -> tuple[Any, ...]:
        if not self._intact():
            return (dict, (dict(self),))
        others = {name: value for name, value in self.items() if name not in self._slots}
        return (_unpack_piped, (self._block, self._slots, list(self), others))


def _unpack_piped(
    block: bytearray, slots: dict[str, _Slot], names: list[str], others: dict[str, Any]
) -> dict[str, Any]:
    """The main process's side of :class:`_PipedBatch`: tensors viewing the received block."""
    return {
        name: torch.from_numpy(_view(block, slots[name])) if name in slots else others[name] for name in names
    }
