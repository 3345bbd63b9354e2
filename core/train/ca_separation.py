"""Measure how far apart the Cα of residues ``k`` positions apart lie in folded chains
(``ca_separation.json``).

For every chain of the Kortemme/Richardson "top240" set (chains listed in its ``index.tsv``),
every pair of residues with a Cα is counted by the Cα-Cα distance, in bins of `BIN_ANGSTROM` up
to `MAX_DISTANCE` (farther pairs in the last bin), separately for each sequence separation
``k = 1 .. MAX_SEPARATION`` (residue numbers, so a gap in a chain's numbering counts) and once
for all separations beyond it (the background: residues of one chain too far apart in the
sequence for it to hold them together). `cryobuild.thread.copies` scores with these which copy
of a homo-oligomer a threaded piece belongs to.

Run as ``python -m cryobuild.train.ca_separation [--data DIR] [--out FILE]``; the default data
folder is found by `cryobuild.data.data_root` (``../shared/data`` beside the checkout).
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

import numpy as np

from ..data import HIGH_RESOLUTION_SOURCE, data_root, high_resolution_records
from ..errors import InputError
from ..models import read_model
from ..residues import BACKBONE_NAMES

__all__ = ["BIN_ANGSTROM", "CA_SEPARATION_RESOURCE", "MAX_DISTANCE", "MAX_SEPARATION", "main",
           "separation_histograms"]

#: The JSON resource (in the package) this writes and `thread.copies` reads.
CA_SEPARATION_RESOURCE = "ca_separation.json"
#: Sequence separations counted one by one; all larger ones are pooled as the background.
MAX_SEPARATION = 40
#: Å: width of the distance bins.
BIN_ANGSTROM = 1.0
#: Å: the last bin holds every distance from here on.
MAX_DISTANCE = 80.0

_DEFAULT_OUT = Path(__file__).resolve().parents[1] / CA_SEPARATION_RESOURCE  # in the package


def separation_histograms(chains: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Counts ``[MAX_SEPARATION + 1, bins]``: row ``k - 1`` the Cα-Cα distances of residues
    ``k`` apart, the last row those more than `MAX_SEPARATION` apart; ``chains`` holds each
    chain's residue numbers ``[R]`` and Cα ``[R, 3]`` (Å)."""
    bins = int(MAX_DISTANCE / BIN_ANGSTROM)
    counts = np.zeros((MAX_SEPARATION + 1, bins), dtype=np.int64)
    for numbers, ca in chains:
        upper = np.triu_indices(len(numbers), k=1)
        separation = np.abs(numbers[:, None] - numbers[None])[upper]
        distance = np.linalg.norm(ca[:, None] - ca[None], axis=-1)[upper]
        row = np.minimum(separation, MAX_SEPARATION + 1) - 1
        column = np.minimum((distance / BIN_ANGSTROM).astype(np.int64), bins - 1)
        np.add.at(counts, (row[separation > 0], column[separation > 0]), 1)
    return counts


def _chains(root: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    """Residue numbers and Cα of the top240 chains listed in its ``index.tsv``."""
    records = high_resolution_records(root)
    ca_index = BACKBONE_NAMES.index("CA")  # atom14 starts with the backbone
    chains = []
    for record in records:
        model = read_model(record.path)
        for chain in record.chains:
            residues = (model.chain_id == chain) & model.atom_mask[:, ca_index]
            chains.append((model.residue_number[residues].astype(np.int64),
                           model.atom_positions[residues, ca_index].astype(np.float64)))
    return chains


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cryobuild.train.ca_separation", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--data", type=Path, default=None, help="shared data folder")
    parser.add_argument("--out", type=Path, default=_DEFAULT_OUT, help="JSON file to write")
    args = parser.parse_args(argv)
    try:
        chains = _chains(data_root(args.data))
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    counts = separation_histograms(chains)
    document = {
        "description": (
            "Counts of Calpha-Calpha distances of residue pairs of one chain: row k-1 for pairs "
            f"k positions apart (k = 1..{MAX_SEPARATION}), the last row for pairs farther apart "
            "in the sequence; column j for distances in [j, j+1) bins of bin_angstrom, the last "
            "column for all farther distances."
        ),
        "source": HIGH_RESOLUTION_SOURCE,
        "generated_by": "python -m cryobuild.train.ca_separation",
        "date": datetime.date.today().isoformat(),
        "num_chains": len(chains),
        "max_separation": MAX_SEPARATION,
        "bin_angstrom": BIN_ANGSTROM,
        "counts": counts.tolist(),
    }
    args.out.write_text(json.dumps(document) + "\n", encoding="utf-8")
    print(f"wrote {args.out}: {len(chains)} chains, {int(counts.sum()):,} residue pairs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
