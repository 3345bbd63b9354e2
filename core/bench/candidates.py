"""What the Cα candidates cost a build: ``python -m cryobuild.bench.candidates MODE [--cases
NAME...] [--seeds S...]``.

Builds real maps as `bench.real` does (the networks that did not see each map), but with the
detector's candidates replaced by an oracle set made from the deposited model, to measure which
property of the candidates holds the builds back (README, "What holds the bars back"):

* ``deposited``: every deposited Cα, nothing else;
* ``noise:S``: every deposited Cα moved by Gaussian noise of S Å per axis;
* ``false``: every deposited Cα, plus the detector's candidates farther than `NEAR` Å from
  any of them;
* ``drop:F``: the deposited Cα with a share F left out at random;
* ``shift:D``: every deposited Cα, each stretch of `SHIFT_STRETCH` consecutive residues moved
  alike along the chain by a step share drawn from [-D, D] (towards the next or the previous
  residue), as the detector's runs lie half a step off;
* ``nearest``: each detector candidate within `NEAR` Å moved onto the deposited Cα it is
  nearest to (one per residue), the others kept: the detector's coverage of the chain with
  exact positions.
* ``taken``: each deposited residue's nearest detector candidate within `NEAR` Å (one
  candidate per residue, taken nearest first), as the detector placed it; every other
  candidate dropped: the detector's candidates without its extra ones.
* ``fragments:K``: the upper bound of a local fit of the detector's candidates to known
  geometry. Each deposited residue takes the nearest detector candidate within `NEAR` Å (one
  candidate per residue); every window of K consecutive deposited residues with at least
  `FRAGMENT_MIN_SHARE` of them taken has its deposited Cα superposed, as one rigid body, on
  those candidates; each residue a window covers (taken or not) goes to the mean of its
  windows' fitted positions; the candidates of residues no window fits, and those farther
  than `NEAR` Å, are kept as they are. It knows each candidate's residue and each fragment's
  exact shape, which a build would have to infer.
* ``library:K``: as ``fragments:K``, but each window's shape is not the deposited one: the
  mean of the `LIBRARY_BEST` fragments of K residues that fit its candidates best, of
  `LIBRARY_SIZE` drawn from the training structures (`train.ca_fragments.fragment_library`); runs of deposited
  residues shorter than K are not fitted. It still knows each candidate's residue.

Every candidate gets the median score of the detector's own. The draws are seeded by the
build's seed. Prints one JSON line per build (`bench.real.run_map`), then per map the means
over the seeds and the means of the 3.5-4.5 Å band.
"""

from __future__ import annotations

import argparse

import numpy as np
from scipy.spatial import cKDTree

from ..chains import superposed_squares
from ..detect import inference
from ..models import read_model
from ..pipeline import BuildOptions
from ..points import CalphaPoints
from ..train.ca_fragments import fragment_library
from .real import BANDS, modelled_cases, network_pairs, run_map

__all__ = ["MODES", "OracleCandidates", "oracle_points", "main"]

#: Å: a candidate this near a deposited Cα is on the protein (`bench.detect.COVER_DISTANCE`).
NEAR = 2.5
#: Residues moved alike by ``shift:D``.
SHIFT_STRETCH = 8
#: ``fragments:K``, ``library:K``: the share of a window's residues that must hold a candidate
#: for its fit.
FRAGMENT_MIN_SHARE = 0.5
#: ``library:K``: fragments drawn for the library, and how many of the best-fitting ones a
#: window's fit averages.
LIBRARY_SIZE = 20_000
LIBRARY_BEST = 10
MODES = ("deposited", "noise", "false", "drop", "shift", "nearest", "taken", "fragments", "library")


def _shifted(reference, top: float, rng: np.random.Generator) -> np.ndarray:
    """The deposited Cα ``[R, 3]``, each stretch of `SHIFT_STRETCH` residues of a chain moved
    alike towards its next (or previous) residue by a share of the step drawn from [-top, top]."""
    ca = reference.ca
    xyz = ca.copy()
    for run in reference.runs():
        for start in range(0, len(run), SHIFT_STRETCH):
            delta = rng.uniform(-top, top)
            for k in run[start:start + SHIFT_STRETCH]:
                j = k + (1 if delta >= 0 else -1)
                if run[0] <= j <= run[-1]:
                    xyz[k] = ca[k] + abs(delta) * (ca[j] - ca[k])
    return xyz


def _superposed(moving: np.ndarray, target: np.ndarray, points: np.ndarray, best: int
                ) -> np.ndarray:
    """The mean of ``points`` ``[L, P, 3]`` over the ``best`` of the L fits, each moved by the
    rigid motion that best superposes its ``moving`` ``[L, M, 3]`` on ``target`` ``[M, 3]``
    (M >= 3; least squares, Kabsch 1976); the fits are ranked by their residual sum of
    squares (`chains.superposed_squares`), and only the ``best`` are moved (a library has
    20,000)."""
    rows = np.argsort(superposed_squares(moving, target))[:best]
    mc = moving[rows] - moving[rows].mean(1, keepdims=True)
    u, _, vt = np.linalg.svd(np.einsum("lmi,mj->lij", mc, target - target.mean(0)))
    u[:, :, 2] *= np.sign(np.linalg.det(u @ vt))[:, None]
    rotation = u @ vt  # row vectors: x -> x @ rotation
    moved = np.einsum("lpi,lij->lpj", points[rows] - moving[rows].mean(1, keepdims=True), rotation)
    return moved.mean(0) + target.mean(0)


def _taken(distance: np.ndarray, nearest: np.ndarray, residues: int) -> np.ndarray:
    """For each of ``residues`` deposited Cα, the index of the candidate it takes, -1 for none,
    from each candidate's ``distance`` (Å) to its ``nearest`` Cα (``[C]`` each): candidates in
    order of that distance, each given to its Cα when within `NEAR` Å and that holds none yet."""
    taken = np.full(residues, -1)
    for k in np.argsort(distance):
        if distance[k] <= NEAR and taken[nearest[k]] < 0:
            taken[nearest[k]] = k
    return taken


def _fragment_fitted(reference, detected: CalphaPoints, window: int,
                     library: np.ndarray | None = None) -> np.ndarray:
    """``fragments:K`` or, given a ``library`` ``[L, K, 3]``, ``library:K`` (module docstring):
    the fitted Cα ``[F, 3]``, then the candidates of the residues no window fitted, then the
    detector's candidates farther than `NEAR` Å from every deposited Cα."""
    ca = reference.ca.astype(np.float64)
    distance, nearest = cKDTree(ca).query(detected.xyz)
    taken = _taken(distance, nearest, len(ca))
    total, count = np.zeros_like(ca), np.zeros(len(ca))
    for run in reference.runs():
        for first in range(max(len(run) - window, 0) + 1):
            rows = run[first:first + window]
            held = taken[rows] >= 0
            if held.sum() < max(3, FRAGMENT_MIN_SHARE * len(rows)):
                continue
            if library is not None and len(rows) < window:
                continue  # no library fragment is this short: its candidates stay as they are
            shapes = ca[rows][None] if library is None else library
            target = detected.xyz[taken[rows[held]]].astype(np.float64)
            total[rows] += _superposed(shapes[:, held], target, shapes, LIBRARY_BEST)
            count[rows] += 1
    unfitted = (count == 0) & (taken >= 0)
    fitted = total[count > 0] / count[count > 0, None]
    return np.concatenate([fitted, detected.xyz[taken[unfitted]], detected.xyz[distance > NEAR]])


def oracle_points(mode: str, reference, detected: CalphaPoints, rng: np.random.Generator,
                  library: np.ndarray | None = None) -> CalphaPoints:
    """The candidates of ``mode`` (module docstring; ``"noise:0.6"`` etc.) for the deposited
    model ``reference``, from the detector's candidates ``detected`` (``library:K`` fits the
    fragments of ``library``, `train.ca_fragments.fragment_library`)."""
    name, _, value = mode.partition(":")
    ca = reference.ca
    distance, nearest = cKDTree(ca).query(detected.xyz)
    if name == "deposited":
        xyz = ca
    elif name == "noise":
        xyz = ca + rng.normal(0.0, float(value), ca.shape)
    elif name == "false":
        xyz = np.concatenate([ca, detected.xyz[distance > NEAR]])
    elif name == "drop":
        xyz = ca[rng.random(len(ca)) >= float(value)]
    elif name == "shift":
        xyz = _shifted(reference, float(value), rng)
    elif name == "nearest":
        near = distance <= NEAR
        xyz = np.concatenate([ca[np.unique(nearest[near])], detected.xyz[~near]])
    elif name == "taken":
        taken = _taken(distance, nearest, len(ca))
        xyz = detected.xyz[taken[taken >= 0]]
    elif name == "fragments":
        xyz = _fragment_fitted(reference, detected, int(value))
    elif name == "library":
        xyz = _fragment_fitted(reference, detected, int(value), library)
    else:
        raise ValueError(f"mode must be one of {MODES} (with :VALUE for noise, drop, shift, fragments, library), got {mode!r}")
    score = float(np.median(detected.score)) if len(detected) else 0.5
    return CalphaPoints(xyz, np.full(len(xyz), score, np.float32))


class OracleCandidates:
    """While active (a context manager), every `inference.detect_calphas` returns the oracle
    candidates of ``mode`` (module docstring) for the deposited model given to `use`, in place
    of the detector's. Builds import it from the module when they run, so `bench.real.run_map`
    builds from the oracle's candidates (here and in ``bench.trace --candidates``)."""

    def __init__(self, mode: str):
        name, _, value = mode.partition(":")
        if name not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        self.mode = mode
        self.library = (fragment_library(int(value), LIBRARY_SIZE, np.random.default_rng(0))
                        if name == "library" else None)
        self._reference = self._rng = None
        self._detect = inference.detect_calphas

    def use(self, reference, rng: np.random.Generator) -> None:
        """The deposited model the next builds' candidates are made from, and their draws."""
        self._reference, self._rng = reference, rng

    def _replaced(self, view, network, options=inference.DetectionOptions(), **kwargs):
        result = self._detect(view, network, options, **kwargs)
        points = oracle_points(self.mode, self._reference, result.points, self._rng, self.library)
        return inference.DetectionResult(points, result.probability)

    def __enter__(self) -> "OracleCandidates":
        self._detect = inference.detect_calphas
        inference.detect_calphas = self._replaced
        return self

    def __exit__(self, *exc) -> None:
        inference.detect_calphas = self._detect


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", help="deposited, noise:S, false, drop:F, shift:D, nearest, taken, fragments:K or library:K")
    parser.add_argument("--networks", nargs="*", default=None, metavar="DETECTOR.pt,GNN.pt",
                        help="network pairs, tried in order, as bench.real's (default: the bundled ones)")
    parser.add_argument("--cases", nargs="*", default=None, help="only these map folders (names)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    try:
        oracle = OracleCandidates(args.mode)
    except ValueError as err:
        parser.error(str(err))
    pairs = network_pairs(args.networks)
    rows = []
    with oracle:
        for seed in args.seeds:
            for case in modelled_cases(args.cases):
                oracle.use(read_model(case.model_path), np.random.default_rng(seed + 100))
                options = BuildOptions(resolution=case.resolution, seed=seed)
                rows.append(run_map(case, pairs, options, args.device, reference_figures=False))
    rows = [row for row in rows if "error" not in row and not row["seen"]]
    print(f"\ncandidates: {args.mode}; seeds {' '.join(map(str, args.seeds))}")
    print("| map | Å | final Cα | final seq. | threaded numbered right |")
    print("|---|---|---|---|---|")
    means = {}
    for case in sorted({row["case"] for row in rows}):
        builds = [row for row in rows if row["case"] == case]
        matched = sum(row["final_threaded_matched"] for row in builds)
        right = sum(row["final_numbered_right"] for row in builds)
        means[case] = (builds[0]["resolution"], np.mean([r["final_ca_recall"] for r in builds]),
                       np.mean([r["final_sequence_recall"] for r in builds]))
        print(f"| {case} | {means[case][0]:g} | {means[case][1]:.2f} | {means[case][2]:.2f} | "
              f"{right / matched if matched else float('nan'):.2f} |")
    for label, low, high in BANDS:
        members = [m for m in means.values() if low < m[0] <= high]
        if members:
            print(f"{label}: {len(members)} maps, final Cα {np.mean([m[1] for m in members]):.2f}, "
                  f"final sequence {np.mean([m[2] for m in members]):.2f}")


if __name__ == "__main__":
    main()
