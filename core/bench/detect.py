"""Benchmark the Cα detector: ``python -m cryobuild.bench.detect``.

Prints one JSON line per case and a Markdown table at the end:

* held-out simulated maps (validation split: no sequence related to a training chain) at
  2.5, 3.0, 3.5 and 4.0 Å, with noise (SNR 3);
* every dev map with a deposited model in ``shared/data/real`` that the detector did not train
  on (the others are named and left out: ``bench.real`` builds each with the fold's pair that
  did not see it);
* for both, the network next to the classical baseline (local maxima of the smoothed map);
* speed: seconds for a 100³ and a 200³ map at 1.5 Å on this machine.

Figures: Cα recall and precision at 3 Å (one-to-one matching) and the median distance of
matched points (Å); how the candidates cover the chain (`coverage`): the share of the deposited
Cα that are the nearest one of a candidate within `COVER_DISTANCE`, and the median length of
the runs of consecutive such residues; and the median probability (the detector's, or the
baseline's score) at the deposited Cα without a candidate and with one. A build of a 3.5-4.5 Å
map threads only when nearly every residue has a candidate near it: given every deposited Cα
the band's sequence recall is 0.86, with 15% of them missing at random 0.35, with every one
moved a median 1.54 Å 0.20 (`bench.candidates`; docs/results_log.md, twenty-fourth and
twenty-fifth stops). The one-to-one recall hides how unevenly the candidates cover the chain,
the median error says how far they lie, and the error correlation
(`neighbour_error_correlation`) whether neighbours lie off together. ``--fill-radius`` sets
`fill_ridges`' radius (0: the local maxima alone); ``--resolutions``, ``--snr`` (0:
noise-free) and ``--recipe`` (ours, or `bench.molmap`'s, which no training uses) set the
simulated maps; ``--with-seen`` adds the real maps the detector trained on, marked as such
(whether training on a map places its Cα any nearer; no such row is a figure of the
detector's).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from ..checkpoints import checkpoint_path, trained_on
from ..data import default_split, dev_cases, read_structure
from ..detect.baseline import detect_calphas_baseline
from ..features import standardise
from ..detect.inference import DETECTION_VOXEL, DetectionOptions, detect_calphas
from ..detect.network import load_detector
from ..evaluate import match_calpha
from ..maps import DensityMap, read_map
from ..models import BuiltModel, read_model
from .molmap import RECIPE_SNR, RECIPES

RESOLUTIONS = (2.5, 3.0, 3.5, 4.0)
#: Å: a candidate this close to its nearest deposited Cα covers that residue (`coverage`).
COVER_DISTANCE = 2.5


def covered_residues(points_xyz: np.ndarray, reference_xyz: np.ndarray) -> np.ndarray:
    """bool ``[R]``: the reference Cα ``[R, 3]`` that are the nearest one of a candidate
    ``[N, 3]`` within `COVER_DISTANCE`."""
    from scipy.spatial import cKDTree

    covered = np.zeros(len(reference_xyz), dtype=bool)
    if len(points_xyz) and len(reference_xyz):
        distance, nearest = cKDTree(reference_xyz).query(points_xyz)
        covered[nearest[distance <= COVER_DISTANCE]] = True
    return covered


def coverage(points_xyz: np.ndarray, reference_xyz: np.ndarray) -> tuple[int, float]:
    """How many of the reference Cα ``[R, 3]`` (in chain order) are `covered_residues`, and the
    median length of the runs of such consecutive residues (0 when none)."""
    covered = covered_residues(points_xyz, reference_xyz)
    edges = np.diff(np.concatenate([[0], covered.astype(int), [0]]))
    runs = np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)
    return int(covered.sum()), float(np.median(runs)) if len(runs) else 0.0


def neighbour_error_correlation(points_xyz: np.ndarray, reference: BuiltModel,
                                pred_index: np.ndarray, ref_index: np.ndarray) -> float:
    """Correlation (pooled over the three axes) of the position errors of the candidates
    ``points_xyz[pred_index]`` paired with reference residues ``ref_index`` (`match_calpha`),
    over the pairs of residues of which one follows the other in its chain
    (`BuiltModel.follows`); nan with fewer than 3 such pairs or errors that do not vary.

    Near 0, the errors are independent from residue to residue, and a joint fit of runs of
    residues to the candidates can average them down; near 1, runs lie off together (a
    stretch shifted along its tube), which no such fit undoes."""
    error = np.full((reference.num_residues, 3), np.nan)
    error[ref_index] = points_xyz[pred_index] - reference.ca[ref_index]
    both = reference.follows() & ~np.isnan(error[:-1, 0]) & ~np.isnan(error[1:, 0])
    first, second = error[:-1][both].ravel(), error[1:][both].ravel()
    if both.sum() < 3 or first.std() == 0 or second.std() == 0:
        return float("nan")
    return float(np.corrcoef(first, second)[0, 1])


def score(points_xyz: np.ndarray, reference: BuiltModel,
          probability: DensityMap | None = None) -> dict:
    """Recall, precision and median error of detected points against the ``reference`` model's
    Cα, the `neighbour_error_correlation` of their errors, their `coverage` of the chain, and
    (given the ``probability`` map) the median probability at the reference Cα without and
    with a candidate (nan where there are none)."""
    reference_xyz = reference.ca
    pred_index, ref_index = match_calpha(points_xyz, reference_xyz)
    errors = np.linalg.norm(points_xyz[pred_index] - reference_xyz[ref_index], axis=1)
    covered, run = coverage(points_xyz, reference_xyz)
    at = {"p_uncovered": float("nan"), "p_covered": float("nan")}
    if probability is not None and len(reference_xyz):
        values = probability.interpolate(reference_xyz, order=1)
        mask = covered_residues(points_xyz, reference_xyz)
        for key, where in (("p_uncovered", ~mask), ("p_covered", mask)):
            if where.any():
                at[key] = float(np.median(values[where]))
    return {
        "n_ref": len(reference_xyz),
        "n_pred": len(points_xyz),
        "n_matched": len(ref_index),
        "recall": len(ref_index) / max(len(reference_xyz), 1),
        "precision": len(pred_index) / max(len(points_xyz), 1),
        "median_error": float(np.median(errors)) if len(errors) else float("nan"),
        "error_correlation": neighbour_error_correlation(points_xyz, reference, pred_index, ref_index),
        "n_covered": covered,
        "median_run": run,
        **at,
    }


def pooled(rows: list[dict]) -> dict:
    """Figures pooled over cases (recall/precision over all atoms, median of case medians)."""
    n_ref = sum(r["n_ref"] for r in rows)
    n_pred = sum(r["n_pred"] for r in rows)
    n_matched = sum(r["n_matched"] for r in rows)
    return {
        "recall": n_matched / max(n_ref, 1),
        "precision": n_matched / max(n_pred, 1),
        "median_error": float(np.nanmedian([r["median_error"] for r in rows])),
        "error_correlation": float(np.nanmedian([r["error_correlation"] for r in rows])),
        "coverage": sum(r["n_covered"] for r in rows) / max(n_ref, 1),
        "median_run": float(np.median([r["median_run"] for r in rows])),
        "p_uncovered": float(np.nanmedian([r["p_uncovered"] for r in rows])),
        "p_covered": float(np.nanmedian([r["p_covered"] for r in rows])),
        "cases": len(rows),
    }


def run_case(name: str, density: DensityMap, resolution: float | None, reference: BuiltModel,
             network, options) -> list[dict]:
    rows = []
    start = time.time()
    view = standardise(density, resolution)
    result = detect_calphas(view, network, options)
    rows.append({"case": name, "method": "network",
                 **score(result.points.xyz, reference, result.probability),
                 "seconds": round(time.time() - start, 2)})
    start = time.time()
    baseline = detect_calphas_baseline(view)
    rows.append({"case": name, "method": "baseline",
                 **score(baseline.points.xyz, reference, baseline.probability),
                 "seconds": round(time.time() - start, 2)})
    for row in rows:
        print(json.dumps(row), flush=True)
    return rows


def speed(network, options, edges=(100, 200)) -> dict:
    """Seconds to run detection on random maps of edge³ voxels at 1.5 Å."""
    rng = np.random.default_rng(0)
    out = {}
    for edge in edges:
        density = DensityMap(rng.standard_normal((edge,) * 3).astype(np.float32), DETECTION_VOXEL, 0)
        start = time.time()
        detect_calphas(standardise(density, 3.0), network, options)
        out[f"{edge}^3"] = round(time.time() - start, 1)
        print(json.dumps({"speed": f"{edge}^3 at 1.5 Å", "seconds": out[f"{edge}^3"]}), flush=True)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", default=None, help="detector weights (default: bundled)")
    parser.add_argument("--threshold", type=float, default=DetectionOptions().threshold)
    parser.add_argument("--cases", type=int, default=6, help="held-out structures per resolution")
    parser.add_argument("--no-speed", action="store_true")
    parser.add_argument("--no-simulated", action="store_true", help="only the real maps")
    parser.add_argument("--fill-radius", type=float, default=DetectionOptions().fill_radius,
                        metavar="Å", help="fill_ridges' radius on maps of "
                        f"{DetectionOptions().fill_from_resolution:g} Å or worse (0: the local "
                        f"maxima alone; default {DetectionOptions().fill_radius:g})")
    parser.add_argument("--resolutions", type=float, nargs="+", default=RESOLUTIONS, metavar="Å",
                        help="of the simulated maps (default %(default)s)")
    parser.add_argument("--recipe", choices=sorted(RECIPES), default="simulate",
                        help="how the held-out maps are simulated: our simulator (training's) or "
                             "bench.molmap's recipe, which no training uses (default %(default)s)")
    parser.add_argument("--snr", type=float, default=None,
                        help="of the simulated maps (0: noise-free; default: the recipe's, "
                             + " and ".join(f"{v:g} for {k}" for k, v in RECIPE_SNR.items()) + ")")
    parser.add_argument("--with-seen", action="store_true",
                        help="also the real maps the detector trained on, marked as such (no "
                             "figure of the detector's on them; for the question whether training "
                             "on a map places its Cα nearer)")
    args = parser.parse_args(argv)

    network = load_detector(args.checkpoint)
    options = DetectionOptions(threshold=args.threshold, fill_radius=args.fill_radius or None)
    table = []
    snr = args.snr if args.snr is not None else RECIPE_SNR[args.recipe]
    label = {"simulate": "simulated", "molmap": "molmap recipe"}[args.recipe]
    validation = sorted(default_split()["validation"], key=lambda r: r.num_residues)
    picks = validation[:: max(len(validation) // args.cases, 1)][: args.cases]
    for resolution in () if args.no_simulated else args.resolutions:
        rng = np.random.default_rng(int(resolution * 10))
        rows = []
        for record in picks:
            structure = read_structure(record.path)
            density = RECIPES[args.recipe](structure, resolution, snr, rng)
            rows += run_case(f"{record.path.name}@{resolution}/{args.recipe}", density, resolution,
                             read_model(record.path), network, options)
        for method in ("network", "baseline"):
            table.append((f"{label} {resolution} Å", method, pooled([r for r in rows if r["method"] == method])))
    seen = trained_on(Path(args.checkpoint or checkpoint_path("detect")))
    left_out = [case.name for case in dev_cases() if case.model_path and case.name in seen]
    for case in dev_cases():
        if case.model_path is None or (case.name in seen and not args.with_seen):
            continue
        rows = run_case(case.name, read_map(case.map_path), case.resolution, read_model(case.model_path),
                        network, options)
        mark = ", trained on it" if case.name in seen else ""
        for row in rows:
            table.append((f"{case.name} ({case.resolution} Å{mark})", row["method"], pooled([row])))
    timing = {} if args.no_speed else speed(network, options)

    simulated = "" if args.no_simulated else (f"; {args.recipe} maps: {len(picks)} held-out "
                                              f"structures, SNR {snr or 'none'}")
    print(f"\nthreshold {args.threshold}{simulated}")
    if left_out and not args.with_seen:
        print(f"left out, the detector trained on them: {', '.join(left_out)}")
    print(f"fill radius {args.fill_radius:g} Å (0: local maxima alone); probability: median at "
          "the deposited Cα without / with a candidate")
    print("| data | method | recall | precision | median error (Å) | error correlation, next residue "
          "| residues covered | median run | probability without / with |")
    print("|---|---|---|---|---|---|---|---|---|")
    for data, method, figures in table:
        print(f"| {data} | {method} | {figures['recall']:.3f} | {figures['precision']:.3f} | "
              f"{figures['median_error']:.2f} | {figures['error_correlation']:.2f} | "
              f"{figures['coverage']:.2f} | {figures['median_run']:g} "
              f"| {figures['p_uncovered']:.2f} / {figures['p_covered']:.2f} |")
    for size, seconds in timing.items():
        print(f"speed {size} voxels at 1.5 Å: {seconds} s")


if __name__ == "__main__":
    main()
