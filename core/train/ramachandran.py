"""Derive allowed Ramachandran regions from high-resolution structures (``ramachandran.json``).

For every residue of the Kortemme/Richardson "top240" set (chains listed in its ``index.tsv``)
with phi and psi defined (`cryobuild.validation.backbone_dihedrals`) and a CA B-factor below
`MAX_B_FACTOR`, (phi, psi) is binned on a `BIN_DEGREES` grid, separately for each class of
`cryobuild.validation.RAMACHANDRAN_CLASSES` (general = neither glycine nor proline). Each class's
histogram is smoothed with a Gaussian of `SMOOTHING_BINS` bins (periodic in both angles), and
bins are taken in order of decreasing smoothed density until they hold `COVERAGE` (99.8%) of
that class's residues: those bins are the allowed region, everything else is an outlier.

Run as ``python -m cryobuild.train.ramachandran [--data DIR] [--out FILE]``; the default data
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
from ..models import BuiltModel, read_model
from ..validation import (
    RAMACHANDRAN_CLASSES,
    RAMACHANDRAN_RESOURCE,
    backbone_dihedrals,
    ramachandran_class,
)

__all__ = ["BIN_DEGREES", "COVERAGE", "MAX_B_FACTOR", "SMOOTHING_BINS", "allowed_regions", "main"]

#: Width of the (phi, psi) bins in degrees.
BIN_DEGREES = 10.0
#: Fraction of a class's residues that its allowed bins must hold.
COVERAGE = 0.998
#: Residues whose CA B-factor (Å²) is at least this are left out, as Lovell et al. (2003,
#: Proteins 50:437) left out main-chain B >= 30 for their Ramachandran plots.
MAX_B_FACTOR = 30.0
#: Standard deviation, in bins, of the Gaussian that smooths the histograms.
SMOOTHING_BINS = 1.0

_DEFAULT_OUT = Path(__file__).resolve().parents[1] / RAMACHANDRAN_RESOURCE  # in the package


def _load(root: Path) -> list[BuiltModel]:
    """The chains of the top240 set listed in its ``index.tsv``."""
    records = high_resolution_records(root)
    models = []
    for record in records:
        model = read_model(record.path)
        models.append(model.select(np.isin(model.chain_id, list(record.chains))))
    return models


def allowed_regions(models: list[BuiltModel]) -> dict:
    """Allowed bins and residue counts per class, as the JSON document's ``classes`` entry.

    Returns
    -------
    dict
        Class name -> ``{"num_residues", "allowed_bins", "allowed"}`` where ``allowed`` is one
        string per phi bin (from -180 degrees up) with one character per psi bin, ``"1"`` for
        allowed.
    """
    from scipy.ndimage import gaussian_filter

    bins = int(round(360.0 / BIN_DEGREES))
    phis, psis, classes = [], [], []
    for model in models:
        phi, psi, defined = backbone_dihedrals(model)
        keep = defined & (model.confidence < MAX_B_FACTOR)
        phis.append(phi[keep])
        psis.append(psi[keep])
        classes.append(ramachandran_class(model.aatype[keep]))
    phi, psi, kind = np.concatenate(phis), np.concatenate(psis), np.concatenate(classes)
    edges = np.linspace(-180.0, 180.0, bins + 1)
    result = {}
    for index, name in enumerate(RAMACHANDRAN_CLASSES):
        chosen = kind == index
        if not chosen.any():
            raise InputError(f"no {name} residues in the data: cannot derive their region")
        counts, _, _ = np.histogram2d(phi[chosen], psi[chosen], bins=[edges, edges])
        smooth = gaussian_filter(counts, SMOOTHING_BINS, mode="wrap")
        # Stable sort, so that ties keep their (phi, psi) order and the result is reproducible.
        order = np.argsort(-smooth, axis=None, kind="stable")
        held = np.cumsum(counts.reshape(-1)[order])
        needed = int(np.searchsorted(held, COVERAGE * held[-1])) + 1
        allowed = np.zeros(bins * bins, dtype=bool)
        allowed[order[:needed]] = True
        allowed = allowed.reshape(bins, bins)
        result[name] = {
            "num_residues": int(chosen.sum()),
            "allowed_bins": int(allowed.sum()),
            "allowed": ["".join("1" if a else "0" for a in row) for row in allowed],
        }
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cryobuild.train.ramachandran", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--data", type=Path, default=None, help="shared data folder")
    parser.add_argument("--out", type=Path, default=_DEFAULT_OUT, help="JSON file to write")
    args = parser.parse_args(argv)
    try:
        models = _load(data_root(args.data))
        classes = allowed_regions(models)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    document = {
        "description": (
            "Allowed Ramachandran regions per residue class: for each phi bin (rows, from -180 "
            "degrees up) a string with one character per psi bin (from -180 up), 1 = allowed."
        ),
        "source": HIGH_RESOLUTION_SOURCE,
        "statistic": (
            f"bins of {BIN_DEGREES:g} degrees, histogram smoothed by a periodic Gaussian of "
            f"{SMOOTHING_BINS:g} bin(s); densest bins holding {COVERAGE:.1%} of the residues "
            f"with CA B-factor < {MAX_B_FACTOR:g}"
        ),
        "generated_by": "python -m cryobuild.train.ramachandran",
        "date": datetime.date.today().isoformat(),
        "num_files": len(models),
        "bin_degrees": BIN_DEGREES,
        "coverage": COVERAGE,
        "classes": classes,
    }
    args.out.write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
    counts = ", ".join(f"{name} {c['num_residues']}" for name, c in classes.items())
    print(f"wrote {args.out}: {len(models)} files; residues per class: {counts}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
