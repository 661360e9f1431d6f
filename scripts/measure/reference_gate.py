"""Where a stranger's references are told apart: identity of blind restorations to own and others' references.

For val people of a prepared set (the benchmark's target and first 4 references), each target is degraded with
a preset, restored blind by the model's network alone, and its cosine similarity under the pipeline's identity
net is taken to each of its own references and to every other person's. Prints the distributions and how many
of each a threshold keeps; `IdentityModel.stranger_threshold` is set from these numbers.

    python scripts/measure/reference_gate.py --data data/val --people 30
"""

from __future__ import annotations

import argparse

import numpy as np

from instantrestore import load_restorer
from instantrestore.data.prepare import load_index
from instantrestore.evaluation.benchmark import benchmark_cases, degradation_seed
from instantrestore.degradations import degrade
from instantrestore.imageio import read_image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--people", type=int, default=30)
    parser.add_argument("--presets", nargs="+", default=["sr32", "codeformer", "sr8"])
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.8, 0.85, 0.88, 0.9])
    args = parser.parse_args()

    index = load_index(args.data)
    cases, _ = benchmark_cases(index, "val", 4, max_people=args.people)
    restorer = load_restorer("default", detail_strength=0)
    identity = restorer.identity_model
    references = {case.person: identity.embed([read_image(index.image_path(case.person, name))
                                               for name in case.references[:4]]) for case in cases}
    for preset in args.presets:
        own, strangers = [], []
        for case in cases:
            target = read_image(index.image_path(case.person, case.target))
            degraded = degrade(target, preset, degradation_seed(0, case.person, preset))
            embedding = identity.embed([restorer.restore_face(degraded)])[0]
            own += list(references[case.person] @ embedding)
            strangers += [s for other, refs in references.items() if other != case.person for s in refs @ embedding]
        own, strangers = np.array(own), np.array(strangers)
        print(f"{preset}: own {own.min():.3f}-{own.max():.3f} (mean {own.mean():.3f}), strangers up to "
              f"{strangers.max():.3f} (mean {strangers.mean():.3f}, 99th percentile {np.percentile(strangers, 99):.3f})")
        print(f"  identity trust (IdentityModel.reference_weights): own {identity.reference_weights(own).mean():.3f}, "
              f"strangers {identity.reference_weights(strangers).mean():.3f}")
        for threshold in args.thresholds:
            print(f"  threshold {threshold}: own kept {np.mean(own >= threshold):.3f}, "
                  f"strangers kept {np.mean(strangers >= threshold):.4f}")


if __name__ == "__main__":
    main()
