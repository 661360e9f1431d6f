"""Shared fixtures: the path to ../shared (skip what needs it when it is absent) and small images."""

import os
from pathlib import Path

import numpy as np
import pytest
import torch

# Tests use tiny models: one thread avoids thread hand-off overhead that dominates on 2 cores.
torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("INSTANTRESTORE_SHARED", REPO.parent / "shared"))


@pytest.fixture(scope="session")
def shared() -> Path:
    if not (SHARED / "data").is_dir():
        pytest.skip(f"{SHARED} is absent: tests on real photos need ../shared beside the checkout")
    return SHARED


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)
