"""ReferenceCache: safetensors round trip, refusal of non-cache files."""

import numpy as np
import pytest
import torch

from instantrestore.errors import WeightsError
from instantrestore.references import ReferenceCache


def test_round_trip(tmp_path, rng):
    cache = ReferenceCache(
        faces=rng.integers(0, 256, (2, 8, 8, 3), dtype=np.uint8),
        identity=rng.standard_normal((2, 128)).astype(np.float32),
        features={"up_blocks.1.attn1.key": torch.randn(2, 16, 4), "up_blocks.1.attn1.value": torch.randn(2, 16, 4)},
        model_id="abc123", notes=["ref.jpg: 2 faces, chose the one most similar to the others"])
    loaded = ReferenceCache.load(cache.save(tmp_path / "refs.safetensors"))
    assert np.array_equal(loaded.faces, cache.faces) and np.array_equal(loaded.identity, cache.identity)
    assert loaded.features.keys() == cache.features.keys()
    assert all(torch.equal(loaded.features[k], v) for k, v in cache.features.items())
    assert (loaded.model_id, loaded.notes, len(loaded)) == ("abc123", cache.notes, 2)


def test_empty_cache_round_trip(tmp_path):
    loaded = ReferenceCache.load(ReferenceCache.empty(16, "m").save(tmp_path / "e.safetensors"))
    assert len(loaded) == 0 and loaded.identity is None and loaded.features == {}


def test_bad_files(tmp_path):
    with pytest.raises(WeightsError, match="no such"):
        ReferenceCache.load(tmp_path / "missing.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"\\x00" * 10)
    with pytest.raises(WeightsError, match="junk.safetensors"):
        ReferenceCache.load(tmp_path / "junk.safetensors")
