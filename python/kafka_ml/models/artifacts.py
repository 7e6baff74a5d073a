"""What `ModelPublisher.publish` accepts as an artifact (bytes, a file, a dict of NumPy arrays or
torch tensors), made into a stream to chunk; and the optional dependencies that need."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from ..exceptions import ConfigError


def _require(module: str, what: str) -> Any:
    """Imports an optional dependency, or says which extra installs it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(f"{what} needs {module.split('.')[0]}: pip install 'kafka-ml[models]'") from e


@dataclass
class _Source:
    """An artifact ready to be chunked: a readable stream and how to describe it."""

    stream: BinaryIO
    format: str
    framework: str | None = None
    filename: str | None = None
    cleanup: Callable[[], None] | None = None


def _is_torch_tensor(value: object) -> bool:
    return type(value).__module__.split(".")[0] == "torch" and hasattr(value, "detach")


def _source(artifact: Any, format: str | None) -> _Source:
    import io

    if isinstance(artifact, (bytes, bytearray, memoryview)):
        return _Source(io.BytesIO(bytes(artifact)), format or "bytes")
    if isinstance(artifact, (str, os.PathLike)):
        path = Path(artifact)
        if not path.is_file():
            raise ConfigError(f"artifact path {str(path)!r} is not a file")
        suffix = path.suffix.lower().lstrip(".")
        guessed = suffix if suffix in ("onnx", "safetensors") else "file"
        return _Source(path.open("rb"), format or guessed, filename=path.name)
    if isinstance(artifact, Mapping):
        return _safetensors_source(artifact)
    if hasattr(artifact, "state_dict") and callable(artifact.state_dict):
        raise ConfigError(
            f"cannot publish a {type(artifact).__name__} object: pass its state_dict() "
            "(models are serialized with safetensors, never pickled)"
        )
    raise ConfigError(
        f"cannot publish a {type(artifact).__name__}: expected bytes, a file path, a dict of NumPy "
        "arrays or a torch state_dict"
    )


def _safetensors_source(tensors: Mapping[Any, Any]) -> _Source:
    """A dict of NumPy arrays or torch tensors, written with safetensors to a temporary file."""
    if not tensors:
        raise ConfigError("cannot publish an empty dict of tensors")
    kinds = set()
    for name, value in tensors.items():
        if not isinstance(name, str):
            raise ConfigError(f"tensor names must be strings, got {name!r}")
        if isinstance(value, np.ndarray):
            kinds.add("numpy")
        elif _is_torch_tensor(value):
            kinds.add("torch")
        else:
            raise ConfigError(
                f"tensor {name!r} is a {type(value).__name__}: expected NumPy arrays or torch tensors"
            )
    if len(kinds) > 1:
        raise ConfigError("a dict of tensors must be all NumPy arrays or all torch tensors, not a mix")
    framework = kinds.pop()
    fd, tmp = tempfile.mkstemp(prefix="kafka-ml-", suffix=".safetensors")
    os.close(fd)

    def cleanup() -> None:
        Path(tmp).unlink(missing_ok=True)

    try:
        if framework == "torch":
            _require("safetensors.torch", "publishing tensors").save_file(dict(tensors), tmp)
        else:
            arrays = {k: np.ascontiguousarray(v) for k, v in tensors.items()}
            _require("safetensors.numpy", "publishing tensors").save_file(arrays, tmp)
    except BaseException:
        cleanup()
        raise
    return _Source(open(tmp, "rb"), "safetensors", framework=framework, cleanup=cleanup)
