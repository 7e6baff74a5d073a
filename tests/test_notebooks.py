"""Every notebook in notebooks/ executes without error."""

from __future__ import annotations

from pathlib import Path

import nbformat
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
