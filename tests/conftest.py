"""Shared fixtures: the lecture's own names file (from ../shared) and the embedded one."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from server.data import DEFAULT_DATA, Dataset, load_dataset

ROOT = Path(__file__).resolve().parent.parent
LECTURE_DATA = ROOT.parent / "shared" / "data" / "names.txt"

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def lecture_dataset() -> Dataset:
    """The lecture's names.txt; its absence is a failure, not a skip: CI has ../shared."""
    assert LECTURE_DATA.is_file(), f"the lecture's data file is missing: {LECTURE_DATA}"
    return load_dataset(LECTURE_DATA)


@pytest.fixture(scope="session")
def embedded_dataset() -> Dataset:
    return load_dataset(DEFAULT_DATA)
