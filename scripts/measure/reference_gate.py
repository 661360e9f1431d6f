"""Where a stranger's references are told apart: the identity trust and the album rule on own and others' photos.

For val people of a prepared set (the benchmark's target and first `--refs` references as the person's album):

- album rule (`IdentityModel.album_outliers`, on the clean references alone): the albums where any of the
  person's own references is cut, and for albums of the person's own photos (all of them, or only the first 2)
  plus one photo of another person of the same `--set`, how often that photo is cut and how often an own one is;
- per preset, the target degraded, restored blind by the model's network alone and compared under the
  pipeline's identity net with each of its own references and every other person's: cosine similarities and
  the trust the pipeline gives (`IdentityModel.reference_weights`), own against strangers'.

With `--cohort PATH` (written by scripts/data/make_identity_cohort.py) it also prints a cohort-normalised
margin per reference (`identity_margin` below) and the trust a 0.05-0.06 ramp on it would give: the measured
reason why a whole album of a stranger cannot be shut out on severe presets without the person's own
(docs/reference-detail.md). References are embedded as the pipeline embeds them (at the restorer's size).

    python scripts/measure/reference_gate.py --data data/frll_celeba --set frll --people 30
    python scripts/measure/reference_gate.py --data data/frll_celeba --set celeba --people 60 \
        --cohort data/identity_cohort_dlib.safetensors
"""

from __future__ import annotations

import argparse

import numpy as np
from safetensors.numpy import load_file

from instantrestore import load_restorer
from instantrestore.data.prepare import load_index
from instantrestore.degradations import degrade
from instantrestore.evaluation.benchmark import benchmark_cases, degradation_seed
from instantrestore.faces.align import resize_face
from instantrestore.faces.identity import IdentityModel
from instantrestore.imageio import read_image

# How many of the cohort's most similar members stand for "the nearest strangers" of a face: of 1 to all 82,
# the one that kept most own references with every stranger's out.
COHORT_NEAREST = 10
# The margin ramp measured: trust 0 at or below the first (just above the highest stranger's margin seen),
# 1 from the second on.
MARGIN_RAMP = (0.05, 0.06)


def identity_margin(face: np.ndarray, references: np.ndarray, cohort: np.ndarray,
                    same_person_threshold: float) -> np.ndarray:
    """(K,) how much more alike a restored face (dim,) and each reference (K, dim) are than each is to its
    nearest strangers: cos(face, ref) - (mean of the face's `COHORT_NEAREST` highest similarities to the cohort
    + the same of the reference) / 2, a symmetric cohort normalisation (adaptive S-norm of the mean). Members the
    net takes for the reference's own person are no strangers to it and are left out."""
    face_to_cohort = cohort @ face  # (M,)
    reference_to_cohort = references @ cohort.T  # (K, M)
    strangers = reference_to_cohort < same_person_threshold
    margins = []
    for similarity, to_cohort, others in zip(references @ face, reference_to_cohort, strangers):
        nearest_to_face = np.sort(face_to_cohort[others])[-COHORT_NEAREST:]
        nearest_to_reference = np.sort(to_cohort[others])[-COHORT_NEAREST:]
        margins.append(similarity - (nearest_to_face.mean() + nearest_to_reference.mean()) / 2)
    return np.array(margins)


def describe(name: str, own: np.ndarray, strangers: np.ndarray) -> str:
    return (f"  {name}: own {own.min():.3f} to {own.max():.3f} (mean {own.mean():.3f}); strangers up to "
            f"{strangers.max():.3f} (mean {strangers.mean():.3f}, 99.9th percentile {np.percentile(strangers, 99.9):.3f})")


def album_rule(identity: IdentityModel, albums: dict[str, np.ndarray]) -> None:
    """Print how often the album rule cuts own references, alone and with one stranger's photo added."""
    own_cut = [identity.album_outliers(album) for album in albums.values()]
    print(f"album rule, {len(albums)} albums of {len(next(iter(albums.values())))} own photos: "
          f"{sum(cut.any() for cut in own_cut)} albums with an own reference cut "
          f"({sum(cut.sum() for cut in own_cut)} references)")
    for own_count in (None, 2):
        stranger_cut, albums_with_own_cut, mixed = 0, 0, 0
        for person, album in albums.items():
            own = album[:own_count]
            for other, photos in albums.items():
                if other == person:
                    continue
                for photo in photos:
                    cut = identity.album_outliers(np.vstack([own, photo]))
                    stranger_cut += cut[-1]
                    albums_with_own_cut += cut[:-1].any()
                    mixed += 1
        print(f"  {len(own)} own + 1 stranger's photo, {mixed} albums: stranger cut in {stranger_cut / mixed:.4f}, "
              f"an own photo cut in {albums_with_own_cut / mixed:.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--people", type=int, default=30)
    parser.add_argument("--refs", type=int, default=4, help="photos in each person's album")
    parser.add_argument("--set", help="only people of this set of a merged one (e.g. frll, celeba)")
    parser.add_argument("--presets", nargs="*", default=["sr32", "codeformer", "sr8", "instantrestore"])
    parser.add_argument("--cohort", help="a cohort file of scripts/data/make_identity_cohort.py: print the margin")
    args = parser.parse_args()

    index = load_index(args.data)
    cases, _ = benchmark_cases(index, "val", args.refs, max_people=args.people,
                               people=None if args.set is None else f"{args.set}_*")
    restorer = load_restorer("default", detail_strength=0)
    identity = restorer.identity_model
    references = {case.person: identity.embed([resize_face(read_image(index.image_path(case.person, name)),
                                                           restorer.face_size) for name in case.references[:args.refs]])
                  for case in cases}
    cohort = None if args.cohort is None else load_file(args.cohort)["descriptors"].astype(np.float64)
    if cohort is not None:
        cohort /= np.linalg.norm(cohort, axis=1, keepdims=True)
    print(f"{len(cases)} people of {args.data} ({args.set or 'all sets'}), {identity.name} identity"
          + ("" if cohort is None else f", {len(cohort)} people in the cohort"))
    album_rule(identity, references)
    for preset in args.presets:
        similarity = {"own": [], "strangers": []}
        margin = {"own": [], "strangers": []}
        for case in cases:
            target = read_image(index.image_path(case.person, case.target))
            degraded = degrade(target, preset, degradation_seed(0, case.person, preset))
            face = identity.embed([restorer.restore_face(degraded)])[0].astype(np.float64)
            for other, descriptors in references.items():
                kind = "own" if other == case.person else "strangers"
                similarity[kind] += list(descriptors @ face)
                if cohort is not None:
                    margin[kind] += list(identity_margin(face, descriptors, cohort, identity.same_person_threshold))
        own, strangers = np.array(similarity["own"]), np.array(similarity["strangers"])
        print(f"{preset}: {len(own)} own and {len(strangers)} strangers' references")
        print(describe("cosine", own, strangers))
        own_trust, stranger_trust = identity.reference_weights(own), identity.reference_weights(strangers)
        print(f"  trust (cosine ramp): own {own_trust.mean():.3f} (full {np.mean(own_trust >= 1):.3f}), "
              f"strangers {stranger_trust.mean():.3f} (any {np.mean(stranger_trust > 0):.3f})")
        if cohort is None:
            continue
        own_margin, stranger_margin = np.array(margin["own"]), np.array(margin["strangers"])
        print(describe("margin", own_margin, stranger_margin))
        low, high = MARGIN_RAMP
        own_trust = np.clip((own_margin - low) / (high - low), 0, 1)
        stranger_trust = np.clip((stranger_margin - low) / (high - low), 0, 1)
        print(f"  trust (margin ramp {low}-{high}): own {own_trust.mean():.3f} (full {np.mean(own_trust >= 1):.3f}, "
              f"any {np.mean(own_trust > 0):.3f}), strangers {stranger_trust.mean():.4f} (any {np.mean(stranger_trust > 0):.4f})")


if __name__ == "__main__":
    main()
