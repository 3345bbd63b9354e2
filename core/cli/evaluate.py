"""``cryobuild evaluate``: score a predicted model against a reference model (METHODS §5)."""

from __future__ import annotations

import argparse
import json

__all__ = ["HELP", "add_args", "main"]

HELP = ("score a predicted model against a reference model in the map frame (recall, RMSD, "
        "lDDT; with -v, both models' fit to the map)")

#: Rows of the text table: Metrics field, label, format of the value.
_ROWS = (
    ("n_pred", "predicted residues", "d"),
    ("n_ref", "reference residues", "d"),
    ("n_matched", "matched residues", "d"),
    ("ca_recall", "Cα recall", ".3f"),
    ("ca_precision", "Cα precision", ".3f"),
    ("sequence_match", "sequence match", ".3f"),
    ("sequence_recall", "sequence recall", ".3f"),
    ("backbone_rmsd", "backbone RMSD (N, Cα, C; true RMSD) / Å", ".2f"),
    ("ca_rmsd", "Cα RMSD / Å", ".2f"),
    ("median_ca_error", "median Cα error / Å", ".2f"),
    ("ca_lddt", "Cα-lDDT", ".3f"),
    ("connectivity", "connectivity", ".3f"),
    ("n_links", "links scored for connectivity", "d"),
    ("register_accuracy", "threaded residues numbered right", ".3f"),
    ("n_threaded_matched", "threaded residues matched", "d"),
)


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-p", "--pred", required=True, metavar="PRED", help="predicted model (mmCIF or PDB)"
    )
    parser.add_argument(
        "-t", "--target", required=True, metavar="REF", help="reference model (mmCIF or PDB)"
    )
    parser.add_argument(
        "-v", "--map", default=None, metavar="MAP",
        help="also the fit of both models to this map (CC_mask, cryobuild.map_fit)",
    )
    parser.add_argument(
        "-r", "--resolution", type=float, default=None,
        help="the map's resolution in Å for the fit (default: estimated from the map)",
    )
    parser.add_argument(
        "--json", action="store_true", help="print one JSON object instead of a table"
    )


def main(args: argparse.Namespace) -> int:
    from ..evaluate import CA_MATCH_CUTOFF, evaluate
    from ..models import read_model

    predicted, reference = read_model(args.pred), read_model(args.target)
    values = evaluate(predicted, reference).to_dict()
    rows = list(_ROWS)
    if args.map is not None:
        from ..features import estimate_resolution
        from ..map_fit import map_fit
        from ..maps import read_map

        density = read_map(args.map)
        resolution = args.resolution or estimate_resolution(density)
        for key, model in (("pred", predicted), ("ref", reference)):
            values[f"cc_mask_{key}"] = map_fit(model, density, resolution).cc_mask
        rows += [("cc_mask_pred", f"predicted model's CC_mask at {resolution:.2g} Å", ".3f"),
                 ("cc_mask_ref", f"reference model's CC_mask at {resolution:.2g} Å", ".3f")]
    if args.json:
        print(json.dumps(values))
        return 0
    width = max(len(label) for _, label, _ in rows)
    print(
        f"{args.pred} against {args.target} "
        f"(map frame, no superposition; Cα pairs matched within {CA_MATCH_CUTOFF:g} Å)"
    )
    for field, label, spec in rows:
        print(f"  {label:<{width}}  {values[field]:{spec}}")
    return 0
