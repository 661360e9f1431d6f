"""Where a stranger's references are told apart: identity of blind restorations to own and others' references.

For val people of a prepared set (the benchmark's target and first 4 references), each target is degraded with
a preset, restored blind by the model's network alone, and compared under the pipeline's identity net with each
of its own references and with every other person's (of the same `--set`). References are embedded as the
pipeline embeds them (at the restorer's size). Prints, per preset, the raw cosine similarities, then the
cohort-normalised `IdentityModel.identity_margin` and the trust the pipeline gives (`reference_trust`): own
against strangers' distributions, mean trust, the share of strangers given any weight and of own references
given full and any weight, and how many of each a margin keeps. `DlibIdentity.stranger_margin` and
`same_person_margin` are set from these numbers; the cohort holds FRLL train people only, so CelebA val people
show how it does on people it has never seen.

    python scripts/measure/reference_gate.py --data data/frll_celeba --set frll --people 30
    python scripts/measure/reference_gate.py --data data/frll_celeba --set celeba --people 60
"""

from __future__ import annotations

import argparse

import numpy as np

from instantrestore import load_restorer
from instantrestore.data.prepare import load_index
from instantrestore.degradations import degrade
from instantrestore.evaluation.benchmark import benchmark_cases, degradation_seed
from instantrestore.faces.align import resize_face
from instantrestore.imageio import read_image


def describe(name: str, own: np.ndarray, strangers: np.ndarray) -> str:
    return (f"  {name}: own {own.min():.3f} to {own.max():.3f} (mean {own.mean():.3f}); strangers up to "
            f"{strangers.max():.3f} (mean {strangers.mean():.3f}, 99.9th percentile {np.percentile(strangers, 99.9):.3f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--people", type=int, default=30)
    parser.add_argument("--set", help="only people of this set of a merged one (e.g. frll, celeba)")
    parser.add_argument("--presets", nargs="+", default=["sr32", "codeformer", "sr8", "instantrestore"])
    parser.add_argument("--margins", type=float, nargs="+", default=[0.02, 0.03, 0.04, 0.05, 0.06])
    args = parser.parse_args()

    index = load_index(args.data)
    cases, _ = benchmark_cases(index, "val", 4, max_people=args.people,
                               people=None if args.set is None else f"{args.set}_*")
    restorer = load_restorer("default", detail_strength=0)
    identity = restorer.identity_model
    references = {case.person: identity.embed([resize_face(read_image(index.image_path(case.person, name)),
                                                           restorer.face_size) for name in case.references[:4]])
                  for case in cases}
    print(f"{len(cases)} people of {args.data} ({args.set or 'all sets'}), {identity.name} identity, "
          f"{len(identity.cohort)} people in the cohort")
    for preset in args.presets:
        similarity = {"own": [], "strangers": []}
        margin = {"own": [], "strangers": []}
        trust = {"own": [], "strangers": []}
        for case in cases:
            target = read_image(index.image_path(case.person, case.target))
            degraded = degrade(target, preset, degradation_seed(0, case.person, preset))
            face = identity.embed([restorer.restore_face(degraded)])[0]
            for other, descriptors in references.items():
                kind = "own" if other == case.person else "strangers"
                similarity[kind] += list(descriptors @ face)
                margin[kind] += list(identity.identity_margin(face, descriptors))
                trust[kind] += list(identity.reference_trust(face, descriptors))
        own_trust, stranger_trust = np.array(trust["own"]), np.array(trust["strangers"])
        print(f"{preset}: {len(own_trust)} own and {len(stranger_trust)} strangers' references")
        print(describe("cosine", np.array(similarity["own"]), np.array(similarity["strangers"])))
        own_margin, stranger_margin = np.array(margin["own"]), np.array(margin["strangers"])
        print(describe("margin", own_margin, stranger_margin))
        print(f"  trust: own {own_trust.mean():.3f} (full {np.mean(own_trust >= 1):.3f}, any {np.mean(own_trust > 0):.3f}), "
              f"strangers {stranger_trust.mean():.4f} (any {np.mean(stranger_trust > 0):.4f})")
        for threshold in args.margins:
            print(f"  margin {threshold}: own kept {np.mean(own_margin > threshold):.3f}, "
                  f"strangers kept {np.mean(stranger_margin > threshold):.4f}")


if __name__ == "__main__":
    main()
