"""The loop's end-to-end latencies: a sliding window for percentiles."""

from __future__ import annotations

import numpy as np


class _Latencies:
    """The most recent end-to-end latencies (ms), for percentiles over a sliding window."""

    def __init__(self, size: int = 100_000) -> None:
        self.values = np.zeros(size, dtype=np.float64)
        self.count = 0

    def add(self, ms: np.ndarray) -> None:
        size = len(self.values)
        ms = ms[-size:]
        start = self.count % size
        end = start + len(ms)
        if end <= size:
            self.values[start:end] = ms
        else:
            split = size - start
            self.values[start:] = ms[:split]
            self.values[: end - size] = ms[split:]
        self.count += len(ms)

    def percentiles(self) -> dict[str, float]:
        window = self.values[: min(self.count, len(self.values))]
        if window.size == 0:
            return {"p50": float("nan"), "p99": float("nan"), "max": float("nan")}
        p50, p99 = np.percentile(window, [50, 99])
        return {"p50": float(p50), "p99": float(p99), "max": float(window.max())}
