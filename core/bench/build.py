"""Benchmark the whole build: ``python -m cryobuild.bench.build``.

Runs ``build`` (through the engine, as the command line does) on held-out simulated maps
(validation split) at 3.0 and 4.0 Å, made by two recipes: `cryobuild.simulate` (SNR 3, the
training maps' simulator) and `cryobuild.bench.molmap` (a recipe no training uses), and on
every dev map with a deposited model that the networks did not train on (``--no-dev`` skips
them; ``bench.real`` is the real-map benchmark proper, each map built by the fold's pair that
did not see it), and
prints per case one JSON line with the `cryobuild.evaluate` figures of the final and the raw
model, the final model's geometry (`cryobuild.validation`), the wall time and the threader's
share of it (``--threader hmm|structgen``; run once per threader to compare them), and what of
the reference a thresholded map erased (`erased_density`); then Markdown tables of the means
per data set.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np

from ..checkpoints import checkpoint_path, trained_on
from ..cli.build import (add_threader_args, add_tuning_args, build_with_engine,
                         threader_options, tuning_options)
from ..data import default_split, dev_cases, read_structure
from ..evaluate import evaluate
from ..maps import read_map
from ..models import read_model
from ..pipeline import BuildOptions, Networks
from ..residues import AA_ORDER
from ..sequences import Sequence, read_fasta
from ..validation import validate_geometry
from .molmap import BENCH_SNR, MOLMAP_SNR, RECIPES
FIGURES = ("ca_recall", "ca_precision", "sequence_recall", "backbone_rmsd", "connectivity")
#: Å: a reference Cα farther than this from every non-zero voxel has no density to follow.
NEAR_DENSITY = 1.5
#: atom14 slot of the first side-chain atom beyond Cβ.
_FIRST_BEYOND_CB = 5


def erased_density(density, reference) -> dict[str, float]:
    """What of ``reference`` lies where ``density`` is exactly 0 (a thresholded map's erased
    density, `cryobuild.maps.erased_below`; nearest voxels): the fraction of its Cα on such
    voxels, of its Cα farther than `NEAR_DENSITY` from every non-zero voxel, and of its side
    chains longer than Cβ with no atom on a non-zero voxel."""
    from scipy.ndimage import distance_transform_edt

    zero = density.grid == 0
    to_density = density.with_grid(distance_transform_edt(zero, sampling=density.voxel_size[::-1]))
    side_mask = reference.atom_mask[:, _FIRST_BEYOND_CB:]
    side_values = np.zeros(side_mask.shape)
    side_values[side_mask] = density.interpolate(
        reference.atom_positions[:, _FIRST_BEYOND_CB:][side_mask], order=0)
    has_side = side_mask.any(axis=1)
    return {
        "reference_ca_on_zero": float(np.mean(density.interpolate(reference.ca, order=0) == 0)),
        "reference_ca_far": float(np.mean(to_density.interpolate(reference.ca, order=0) > NEAR_DENSITY)),
        "reference_sidechains_erased": float(np.mean(~(side_values != 0).any(axis=1)[has_side])),
    }


def model_sequences(model) -> list[Sequence]:
    """One sequence per chain of a reference model (its declared sequence, else its residues)."""
    sequences = []
    for chain in model.chains():
        declared = model.entity_sequences.get(chain)
        residues = declared or "".join(AA_ORDER[a] for a in model.aatype[model.chain_id == chain] if a < 20)
        sequences.append(Sequence(chain, residues))
    return sequences


def run_case(name, density, sequences, reference, options, networks) -> dict:
    started = time.time()
    try:
        result, _ = build_with_engine(density, sequences, options, quiet=True, networks=networks)
    except Exception as err:  # noqa: BLE001 - a failed case is reported, not fatal
        row = {"case": name, "error": str(err), "seconds": round(time.time() - started, 1)}
        print(json.dumps(row), flush=True)
        return row
    row = {"case": name, "residues": reference.num_residues, "seconds": round(time.time() - started, 1),
           "thread_seconds": round(result.seconds.get("thread", 0.0), 1),
           **{key: round(value, 3) for key, value in erased_density(density, reference).items()}}
    for label, model in (("final", result.final), ("raw", result.raw)):
        metrics = evaluate(model, reference).to_dict()
        row.update({f"{label}_{key}": round(metrics[key], 3) for key in FIGURES})
    if result.final.num_residues:
        geometry = validate_geometry(result.final)
        row.update(peptide_bonds_ok=round(geometry.peptide_bond_ideal_fraction, 3),
                   clashscore=round(geometry.clashscore, 1),
                   rama_outliers=round(geometry.ramachandran_outlier_fraction, 3),
                   out_of_reach=geometry.num_numbered_out_of_reach)
    print(json.dumps(row), flush=True)
    return row


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=4, help="held-out structures per resolution")
    parser.add_argument("--resolutions", type=float, nargs="*", default=[3.0, 4.0])
    parser.add_argument("--rounds", type=int, default=3)
    add_threader_args(parser, checkpoint=True)
    parser.add_argument("--no-dev", action="store_true", help="skip the dev maps")
    parser.add_argument("--recipes", nargs="*", default=["simulate", "molmap"],
                        choices=sorted(RECIPES), help="simulation recipes of the held-out maps")
    parser.add_argument("--snr", type=float, default=BENCH_SNR,
                        help=f"SNR of our simulator's maps (default {BENCH_SNR:g})")
    parser.add_argument("--molmap-snr", type=float, default=MOLMAP_SNR,
                        help=f"SNR of the molmap recipe's maps (default {MOLMAP_SNR:g}; inf: no noise)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--detector", default=None,
                        help="Cα detector checkpoint (default: the bundled weights/detect.pt)")
    parser.add_argument("--gnn", default=None,
                        help="graph network checkpoint (default: the bundled weights/gnn.pt)")
    add_tuning_args(parser)
    args = parser.parse_args(argv)

    options = BuildOptions(rounds=args.rounds, **threader_options(args), **tuning_options(args))
    networks = Networks.load(args.device, gnn=args.gnn, detector=args.detector, structgen=args.structgen)
    table = {}
    validation = sorted(default_split()["validation"], key=lambda r: r.num_residues)
    picks = [r for r in validation if 80 <= r.num_residues <= 400]
    picks = picks[:: max(len(picks) // args.cases, 1)][: args.cases]
    snr = {"simulate": args.snr, "molmap": args.molmap_snr}
    for resolution in args.resolutions:
        for recipe, make_map in RECIPES.items():
            if recipe not in args.recipes:
                continue
            rng = np.random.default_rng(int(resolution * 10))
            rows = []
            for record in picks:
                structure = read_structure(record.path)
                reference = read_model(record.path)
                density = make_map(structure, resolution, snr[recipe], rng)
                rows.append(run_case(f"{record.path.name}@{resolution}/{recipe}", density,
                                     model_sequences(reference), reference,
                                     dataclasses.replace(options, resolution=resolution), networks))
            table[f"{recipe} {resolution} Å ({len(picks)} held-out)"] = rows
    if not args.no_dev:
        seen = trained_on(Path(args.detector or checkpoint_path("detect")),
                          Path(args.gnn or checkpoint_path("gnn")))
        skipped = [case.name for case in dev_cases() if case.model_path and case.name in seen]
        if skipped:
            print(f"left out, the networks trained on them: {', '.join(skipped)} "
                  "(bench.real builds each with the pair that did not)")
        for case in dev_cases():
            if case.model_path is None or case.name in seen:
                continue
            reference = read_model(case.model_path)
            sequences = read_fasta(case.fasta_path) if case.fasta_path else model_sequences(reference)
            row = run_case(case.name, read_map(case.map_path), sequences, reference,
                           dataclasses.replace(options, resolution=case.resolution), networks)
            table[f"{case.name} ({case.resolution} Å)"] = [row]

    print(f"\n{args.rounds} rounds, threader {args.threader}, max E-value {args.max_evalue:g}, "
          f"min existence {args.min_existence:g}, placement {'on' if args.placement else 'off'}, "
          f"closure {'on' if args.closure else 'off'}, gnn {args.gnn or 'gnn.pt'}, "
          f"detector {args.detector or 'detect.pt'}, "
          f"detection threshold {args.detection_threshold or 'default'}, "
          f"SNR {args.snr:g} (our simulator) / {args.molmap_snr:g} (molmap)")
    header = ["data"] + [f"final {k}" for k in FIGURES] + ["raw ca_recall", "raw sequence_recall", "seconds",
                                                           "thread seconds"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for data, rows in table.items():
        good = [r for r in rows if "error" not in r]
        if not good:
            print(f"| {data} | " + " | ".join(["failed"] * (len(header) - 1)) + " |")
            continue
        cells = [np.mean([r[f"final_{k}"] for r in good]) for k in FIGURES]
        cells += [np.mean([r["raw_ca_recall"] for r in good]), np.mean([r["raw_sequence_recall"] for r in good]),
                  np.mean([r["seconds"] for r in good]), np.mean([r["thread_seconds"] for r in good])]
        print(f"| {data} | " + " | ".join(f"{c:.2f}" for c in cells) + " |")

    print("\nGeometry of the final models (`cryobuild.validation`; mean over cases with a final model)")
    print("| data | peptide bonds within 0.1 Å | clashscore | Ramachandran outliers (%) | "
          "residues numbered out of reach (all cases) |")
    print("|---|---|---|---|---|")
    for data, rows in table.items():
        built = [r for r in rows if "clashscore" in r]
        if built:
            print(f"| {data} | {np.mean([r['peptide_bonds_ok'] for r in built]):.2f} | "
                  f"{np.mean([r['clashscore'] for r in built]):.1f} | "
                  f"{100 * np.mean([r['rama_outliers'] for r in built]):.1f} | "
                  f"{sum(r['out_of_reach'] for r in built)} |")

    print("\nWhat of the reference the map erased (`erased_density`; mean over cases)")
    print(f"| data | reference Cα on zeroed voxels | Cα > {NEAR_DENSITY:g} Å from density | "
          "side chains with no density |")
    print("|---|---|---|---|")
    for data, rows in table.items():
        good = [r for r in rows if "error" not in r]
        if good:
            print(f"| {data} | " + " | ".join(f"{np.mean([r[key] for r in good]):.2f}" for key in (
                "reference_ca_on_zero", "reference_ca_far", "reference_sidechains_erased")) + " |")


if __name__ == "__main__":
    main()
