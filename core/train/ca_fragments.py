"""Draw the known Cα shapes that linking fits windows of a trace to (``ca_fragments.json``).

`fragment_library` draws windows of ``window`` consecutive Cα at random from the training
structures (`cryobuild.data.default_split`, which keeps the real maps' proteins out);
`cryobuild.chains.relink_by_shape` reads `FRAGMENT_COUNT` of them, `SHAPE_WINDOW` long, from the
package, and `cryobuild.bench.candidates`' ``library:K`` oracle draws its own.

Run as ``python -m cryobuild.train.ca_fragments [--out FILE]``; the data folder is found by
`cryobuild.data.data_root` (``../shared/data`` beside the checkout).
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

import numpy as np

from ..chains import CA_FRAGMENTS_RESOURCE, FRAGMENT_COUNT, SHAPE_WINDOW
from ..errors import InputError
from ..models import read_model

__all__ = ["fragment_library", "main"]

_DEFAULT_OUT = Path(__file__).resolve().parents[1] / CA_FRAGMENTS_RESOURCE  # in the package


def fragment_library(window: int, count: int, rng: np.random.Generator) -> np.ndarray:
    """Cα fragments ``[count, window, 3]`` (Å): windows of ``window`` consecutive residues drawn
    at random from the training structures."""
    from ..data import default_split

    fragments = []
    for record in default_split()["train"]:
        model = read_model(record.path)
        for run in model.runs():
            for first in range(len(run) - window + 1):
                fragments.append(model.ca[run[first:first + window]])
    fragments = np.asarray(fragments, dtype=np.float64)
    return fragments[rng.choice(len(fragments), min(count, len(fragments)), replace=False)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cryobuild.train.ca_fragments", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=_DEFAULT_OUT, help="JSON file to write")
    args = parser.parse_args(argv)
    try:
        fragments = fragment_library(SHAPE_WINDOW, FRAGMENT_COUNT, np.random.default_rng(0))
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    fragments -= fragments.mean(axis=1, keepdims=True)
    document = {
        "description": (f"Calpha windows of {SHAPE_WINDOW} consecutive residues (Angstrom, each "
                        "centred on its mean), drawn at random from the training structures"),
        "generated_by": "python -m cryobuild.train.ca_fragments",
        "date": datetime.date.today().isoformat(),
        "fragments": np.round(fragments, 2).tolist(),
    }
    args.out.write_text(json.dumps(document) + "\n", encoding="utf-8")
    print(f"wrote {args.out}: {len(fragments)} fragments of {SHAPE_WINDOW} Calpha")
    return 0


if __name__ == "__main__":
    sys.exit(main())
