"""Training pairs for reference-guided restoration, from a `prepare-data` directory.

Each sample is one photo of a person, degraded on the fly, plus up to K *other* photos of the same
person as references. Everything random in a sample (preset, degradation, reference choice) comes
from a generator seeded with (dataset seed, index, sample seed), so a trainer that records its
sample seeds (e.g. the epoch) can resume and replay exactly, in any worker process.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from instantrestore.data.prepare import load_index
from instantrestore.degradations import DegradationPreset, apply_degradation, get_preset, sample_parameters
from instantrestore.errors import ConfigError
from instantrestore.faces.align import resize_face
from instantrestore.imageio import read_image


def _to_tensor(image: np.ndarray) -> torch.Tensor:
    """uint8 HxWx3 -> (3, H, W) float in [-1, 1], the networks' range (as the pipeline's `faces_to_tensor`)."""
    return torch.from_numpy(image.transpose(2, 0, 1).astype(np.float32) / 127.5 - 1)


class FaceRestorationDataset(Dataset):
    """(degraded, target, references) triples of aligned faces, identity-disjoint by split.

    Args:
        data_dir:  a directory written by `prepare_dataset`.
        split:     "train", "val" (or another split of the manifest), or "all".
        size:      side S of the returned images; crops are stored at 512 and resized with `resize_face`.
        preset:    a degradation preset (name or object) or a list of them, one drawn per sample.
        num_refs:  K, references per sample; people with fewer other photos get a `reference_mask`.
        seed:      dataset seed, mixed into every sample's generator.

    A sample is a dict:
        degraded (3,S,S), target (3,S,S): float [-1, 1]; the degradation is applied at the stored
            resolution, so preset parameters mean the same thing at any S.
        references (K,3,S,S): other photos of the same person, never the target, in [-1, 1]; zeros
            where padded.
        reference_mask (K,) bool: which references are real.
        target_landmarks (68,2), reference_landmarks (K,68,2): float32 pixel coordinates at S.
        target_landmarks_valid () bool, reference_landmarks_valid (K,) bool: landmarks reliable enough
            for the landmark attention loss (turned faces keep their image but not their landmarks).
        person, name, preset: str; reference_names: K str ("" where padded).
    """

    def __init__(self, data_dir: str | os.PathLike, split: str = "train", size: int = 256,
                 preset: str | DegradationPreset | Sequence[str | DegradationPreset] = "instantrestore",
                 num_refs: int = 4, seed: int = 0) -> None:
        self.index = load_index(data_dir)
        presets = [preset] if isinstance(preset, (str, DegradationPreset)) else list(preset)
        self.presets = [get_preset(p) for p in presets]
        if not self.presets:
            raise ConfigError("preset: give at least one degradation preset")
        self.split = split
        self.size = size
        self.num_refs = num_refs
        self.seed = seed
        self._people = self.index.people(split)
        if not self._people:
            known = sorted(set(self.index.splits.values()))
            raise ConfigError(f"{data_dir}: no people in split {split!r} (splits: {', '.join(known)}, all)")
        self.items = [(person, name) for person in self._people for name in self.index.photos(person)]
        # Landmarks are small: read every record once instead of per sample.
        self._landmarks = {item: self.index.landmarks(*item) for item in self.items}

    def __len__(self) -> int:
        return len(self.items)

    def people(self) -> list[str]:
        """People of this split, sorted."""
        return list(self._people)

    def photos(self, person: str) -> tuple[str, ...]:
        """Photo names of one person (stems in the data directory)."""
        return self.index.photos(person)

    def load_face(self, person: str, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(image HxWx3 uint8 at the stored size, landmarks (68,2) at the stored size) of one photo."""
        return read_image(self.index.image_path(person, name)), self._landmarks[(person, name)][0]

    def landmarks_reliable(self, person: str, name: str) -> bool:
        return self._landmarks[(person, name)][1]

    def _resize(self, image: np.ndarray, landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        height = image.shape[0]
        if height == self.size:
            return image, landmarks
        scale = self.size / height
        image = resize_face(image, self.size)  # as the pipeline prepares references
        # Pixel centres sit at integer coordinates, so the scale acts about the -0.5 corner.
        return image, (landmarks + 0.5) * scale - 0.5

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.sample(index, 0)

    def sample(self, index: int, sample_seed: int = 0) -> dict[str, Any]:
        """Sample `index` with the randomness of `sample_seed` (same arguments -> same sample)."""
        person, name = self.items[index]
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, index, sample_seed]))
        preset = self.presets[int(rng.integers(len(self.presets)))]
        others = [other for other in self.photos(person) if other != name]
        chosen = [others[i] for i in rng.permutation(len(others))[: self.num_refs]]
        parameters = sample_parameters(preset, rng)

        target, target_landmarks = self.load_face(person, name)
        degraded, _ = self._resize(apply_degradation(target, parameters), target_landmarks)
        target, target_landmarks = self._resize(target, target_landmarks)

        references = torch.zeros(self.num_refs, 3, self.size, self.size)
        reference_landmarks = torch.zeros(self.num_refs, 68, 2)
        reference_mask = torch.zeros(self.num_refs, dtype=torch.bool)
        reference_landmarks_valid = torch.zeros(self.num_refs, dtype=torch.bool)
        for k, other in enumerate(chosen):
            image, landmarks = self._resize(*self.load_face(person, other))
            references[k] = _to_tensor(image)
            reference_landmarks[k] = torch.from_numpy(np.asarray(landmarks, np.float32))
            reference_mask[k] = True
            reference_landmarks_valid[k] = self.landmarks_reliable(person, other)
        return {
            "degraded": _to_tensor(degraded),
            "target": _to_tensor(target),
            "references": references,
            "reference_mask": reference_mask,
            "target_landmarks": torch.from_numpy(np.asarray(target_landmarks, np.float32)),
            "reference_landmarks": reference_landmarks,
            "target_landmarks_valid": torch.tensor(self.landmarks_reliable(person, name)),
            "reference_landmarks_valid": reference_landmarks_valid,
            "person": person,
            "name": name,
            "preset": preset.name,
            "reference_names": chosen + [""] * (self.num_refs - len(chosen)),
        }
