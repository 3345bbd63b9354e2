"""What holds the final models' precision: ``python -m cryobuild.bench.precision FOLDER
[--cuts C ...]``.

Reads the builds ``python -m cryobuild.bench.real --keep FOLDER`` wrote (``FOLDER/<map>/model.cif``)
and each map's deposited model, and prints per map:

* the final Cα recall and precision (`evaluate.match_calpha`, 3 Å, one-to-one) as built, and with
  the unassigned chains' residues below each confidence cut of ``--cuts`` left out (the build's
  own cut is `pipeline.UNASSIGNED_MIN_CONFIDENCE`): what a stricter cut would trade;
* of the final residues paired with no deposited Cα: how many lie within 3 Å of a deposited atom
  (on the modelled protein rather than on density the reference lacks), their median distance to
  the nearest deposited Cα, and how many are in chains of fewer than `SHORT_CHAIN` residues;
* the unassigned chains that lie along a threaded chain, their Cα a median of less than
  `BESIDE_THREADED` from its atoms (on its side chains rather than on a backbone of their own):
  how many of their residues are paired and unpaired, and the recall and precision without
  them (a rule the build does not apply; docs/results_log.md, fifteenth stop).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from scipy.spatial import cKDTree

from ..evaluate import CA_MATCH_CUTOFF, evaluate, match_calpha
from ..models import read_model

__all__ = ["BESIDE_THREADED", "SHORT_CHAIN", "main", "precision_figures"]

#: Residues: chains shorter than this count as short.
SHORT_CHAIN = 10
#: Å: an unassigned chain whose Cα lie a median of less than this from a threaded chain's atoms
#: counts as lying along it.
BESIDE_THREADED = 4.0


def _recall_precision(model, reference) -> tuple[float, float]:
    """Final Cα recall and precision as `bench.real` reports them (`evaluate.evaluate`)."""
    metrics = evaluate(model, reference)
    return metrics.ca_recall, metrics.ca_precision


def precision_figures(model, reference, cuts: list[float]) -> dict:
    """The figures of the module docstring for one final ``model`` against its ``reference``
    (`BuiltModel` both, in one frame)."""
    figures = {}
    recall, precision = _recall_precision(model, reference)
    figures["as built"] = (recall, precision)
    unassigned = np.array([chain not in model.entity_sequences for chain in model.chain_id])
    for cut in cuts:
        kept = model.select(~unassigned | (model.confidence >= cut))
        figures[f"unassigned >= {cut:g}"] = _recall_precision(kept, reference)
    paired, _ = match_calpha(model.ca, reference.ca)
    unpaired = np.ones(model.num_residues, dtype=bool)
    unpaired[paired] = False
    atoms = reference.atom_positions[reference.atom_mask.astype(bool)]
    to_atom, _ = cKDTree(atoms).query(model.ca[unpaired])
    to_ca, _ = cKDTree(reference.ca).query(model.ca[unpaired])
    chain_length = {chain: int(np.sum(model.chain_id == chain)) for chain in model.chains()}
    short = np.array([chain_length[chain] < SHORT_CHAIN for chain in model.chain_id])
    figures["unpaired"] = {
        "residues": int(unpaired.sum()),
        "near_protein": int(np.sum(to_atom <= CA_MATCH_CUTOFF)),
        "median_to_ca": float(np.median(to_ca)) if len(to_ca) else float("nan"),
        "in_short_chains": int(np.sum(short[unpaired])),
    }
    beside = np.zeros(model.num_residues, dtype=bool)
    threaded_atoms = model.atom_positions[~unassigned][model.atom_mask[~unassigned].astype(bool)]
    if len(threaded_atoms) and unassigned.any():
        tree = cKDTree(threaded_atoms)
        for chain in np.unique(model.chain_id[unassigned]):
            rows = model.chain_id == chain
            beside[rows] = np.median(tree.query(model.ca[rows])[0]) < BESIDE_THREADED
    figures["beside threaded"] = {"paired": int(np.sum(beside & ~unpaired)),
                                  "unpaired": int(np.sum(beside & unpaired))}
    figures["without beside threaded"] = _recall_precision(model.select(~beside), reference)
    return figures


def main(argv=None) -> None:
    from .real import modelled_cases

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, help="the --keep folder of a bench.real run")
    parser.add_argument("--cuts", type=float, nargs="*", default=[70.0, 72.0, 75.0],
                        help="confidence cuts for the unassigned residues")
    args = parser.parse_args(argv)
    columns = ["as built"] + [f"unassigned >= {cut:g}" for cut in args.cuts]
    print("| map | " + " | ".join(f"{c}: Cα recall / precision" for c in columns)
          + " | unpaired | within 3 Å of the protein | median Å to a Cα | in chains < "
          f"{SHORT_CHAIN} | along threaded chains: paired / unpaired | without them: Cα recall "
          "/ precision |")
    print("|---|" + "---|" * (len(columns) + 6))
    for case in modelled_cases():
        path = args.folder / case.name / "model.cif"
        if not path.is_file():
            continue
        figures = precision_figures(read_model(path), read_model(case.model_path), args.cuts)
        unpaired = figures["unpaired"]
        print(f"| {case.name} | "
              + " | ".join(f"{figures[c][0]:.2f} / {figures[c][1]:.2f}" for c in columns)
              + f" | {unpaired['residues']} | {unpaired['near_protein']} | "
              f"{unpaired['median_to_ca']:.1f} | {unpaired['in_short_chains']} | "
              f"{figures['beside threaded']['paired']} / {figures['beside threaded']['unpaired']} | "
              "{:.2f} / {:.2f} |".format(*figures["without beside threaded"]))


if __name__ == "__main__":
    main()
