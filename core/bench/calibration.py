"""How well calibrated are the graph network's residue types on real maps? ``python -m
cryobuild.bench.calibration [--fold A|B]``.

Each real map of the fold (default: both folds) is refined from its deposited Cα plus noise
(as ``bench.gnn``, 3 rounds) by the bundled graph network that did not train on it
(``bench.real``'s choice). Per resolution band it prints the residue-type accuracy, the mean
top probability, the mean negative log-likelihood of the deposited types (nats; uniform is
ln 20 = 3.00) and the temperature ``T`` (probabilities ``∝ p^(1/T)``, searched over 0.6-4.0)
that minimises it, with that minimum: a ``T`` near 1 means the types are as sure as they are
right.
"""

from __future__ import annotations

import argparse

import numpy as np

from ..data import REAL_FOLDS, dev_cases
from .gnn import folder_case, noisy_start
from .real import BANDS, network_pairs

__all__ = ["TEMPERATURES", "main", "negative_log_likelihood"]

#: Temperatures searched.
TEMPERATURES = np.round(np.arange(0.6, 4.01, 0.1), 2)


def negative_log_likelihood(probs: np.ndarray, types: np.ndarray, temperature: float) -> float:
    """Mean -ln q(type) (nats) of ``probs`` ``[R, 20]`` tempered by ``temperature``, for the
    true ``types`` ``[R]``."""
    logits = np.log(np.clip(probs, 1e-8, 1.0)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    log_q = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    return float(-log_q[np.arange(len(types)), types].mean())


def main(argv=None):
    from ..gnn.refine import refine

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fold", choices=sorted(REAL_FOLDS), default=None)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    pairs = network_pairs(None)
    probs, types, resolutions = [], [], []
    for case in dev_cases():
        if case.model_path is None or (args.fold and case.name not in REAL_FOLDS[args.fold]):
            continue
        pair = next((p for p in pairs if case.name not in p.seen), None)
        if pair is None:
            continue
        networks = pair.networks(args.device)
        bench_case = folder_case(case.folder)
        start = noisy_start(bench_case.reference, np.random.default_rng(0))
        output = refine(bench_case.view, start, list(bench_case.sequences), networks.gnn, rounds=3,
                        device=networks.device)
        known = bench_case.reference.aatype < 20
        probs.append(np.asarray(output.aa_probs)[known])
        types.append(bench_case.reference.aatype[known])
        resolutions += [case.resolution] * int(known.sum())
        print(f"{case.name}: {int(known.sum())} residues, {pair.gnn.name}", flush=True)
    probs, types, resolutions = np.concatenate(probs), np.concatenate(types), np.array(resolutions)
    print("\n| band | residues | accuracy | mean top probability | NLL at T = 1 | best T | NLL at best T |")
    print("|---|---|---|---|---|---|---|")
    for band, low, high in (("all", 0.0, 99.0), *BANDS):
        chosen = (resolutions > low) & (resolutions <= high)
        if not chosen.any():
            continue
        p, t = probs[chosen], types[chosen]
        nll = [negative_log_likelihood(p, t, temperature) for temperature in TEMPERATURES]
        best = int(np.argmin(nll))
        print(f"| {band} | {int(chosen.sum())} | {np.mean(p.argmax(axis=1) == t):.3f} | "
              f"{p.max(axis=1).mean():.3f} | {negative_log_likelihood(p, t, 1.0):.3f} | "
              f"{TEMPERATURES[best]:.1f} | {nll[best]:.3f} |")


if __name__ == "__main__":
    main()
