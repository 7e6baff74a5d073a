"""Every notebook in notebooks/ executes without error."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import numpy as np
import pytest
from nbclient import NotebookClient

# Notebooks that need services beyond the broker run in the tests that start those services.
RUN_ELSEWHERE = {"04-postgres-to-model.ipynb": "tests/test_connect.py (PostgreSQL and Kafka Connect)"}
NOTEBOOKS = sorted(
    p
    for p in (Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb")
    if p.name not in RUN_ELSEWHERE
)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    NotebookClient(
        nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    ).execute()
    assert any(c.get("outputs") for c in nb.cells if c.cell_type == "code")


def test_demo_runs_the_whole_pipeline(capsys: pytest.CaptureFixture[str]) -> None:
    from kafka_ml.cli import main

    assert main(["demo", "--epochs", "3", "--repeat", "2"]) == 0
    out = capsys.readouterr().out
    for step in ("1. ingest", "2. train", "3. publish", "4. serve"):
        assert step in out
    assert "exactly once: yes" in out


# Runs `kafka-ml demo` where no import outside the standard library, the package's dependencies
# (NumPy, pyarrow, safetensors) and kafka_ml succeeds: what `pip install kafka-ml` gives.
BARE_INSTALL = r"""
import importlib.abc
import sys

ALLOWED = {"numpy", "pyarrow", "safetensors", "kafka_ml"}


class BareInstall(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        top = name.partition(".")[0]
        if top in ALLOWED or top in sys.stdlib_module_names:
            return None  # the usual finders
        raise ModuleNotFoundError(f"No module named {name!r} (not in a bare install)", name=name)


sys.meta_path.insert(0, BareInstall())
from kafka_ml.cli import main

code = main(["demo"])
others = sorted({m.partition(".")[0] for m in sys.modules} - ALLOWED - set(sys.stdlib_module_names))
print("modules beyond the standard library and the dependencies:", others)
sys.exit(code)
"""


def test_demo_runs_on_a_bare_install() -> None:
    """`pip install kafka-ml` then `kafka-ml demo`: no scikit-learn (the digits ship with the
    package), no torch (NumPy trains), no tqdm, on the embedded cluster."""
    started = time.monotonic()
    run = subprocess.run(
        [sys.executable, "-c", BARE_INSTALL], capture_output=True, text=True, timeout=180, check=False
    )
    took = time.monotonic() - started
    assert run.returncode == 0, run.stdout + run.stderr
    out = run.stdout
    assert "2. train: NumPy softmax regression, 10 epochs from Kafka" in out
    assert "exactly once: yes" in out
    accuracy = re.search(r"accuracy (\d+\.\d)% on held-out digits", out)
    assert accuracy is not None and float(accuracy.group(1)) > 85, out
    loaded = re.search(r"modules beyond the standard library and the dependencies: \[(.*)\]", out)
    assert loaded is not None
    # Nothing else: `__main__`, the Cython runtime of NumPy's and pyarrow's extensions, and what
    # site-packages' .pth files load when the interpreter starts (setuptools' hook).
    others = {m.strip(" '") for m in loaded.group(1).split(",")}
    others -= {"", "__main__", "_distutils_hack", "cython_runtime"}
    assert all(m.startswith("_cython_") for m in others), out
    print(f"bare-install demo: {took:.1f} s in all")


def test_shipped_digits_are_scikit_learns() -> None:
    from kafka_ml.demo import load_digits

    pixels, labels = load_digits()
    assert pixels.shape == (1797, 64) and pixels.dtype == np.uint8 and pixels.max() == 16
    assert labels.shape == (1797,) and np.bincount(labels).min() >= 170
    datasets = pytest.importorskip("sklearn.datasets")
    reference = datasets.load_digits()
    np.testing.assert_array_equal(pixels, reference.data)
    np.testing.assert_array_equal(labels, reference.target)
