"""``cryobuild evaluate``: score a predicted model against a reference model (METHODS §5)."""

from __future__ import annotations

import argparse
import json

__all__ = ["HELP", "add_args", "main"]

HELP = "score a predicted model against a reference model in the map frame (recall, RMSD, lDDT)"

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
        "--json", action="store_true", help="print one JSON object instead of a table"
    )


def main(args: argparse.Namespace) -> int:
    from ..evaluate import CA_MATCH_CUTOFF, evaluate
    from ..models import read_model

    metrics = evaluate(read_model(args.pred), read_model(args.target))
    if args.json:
        print(json.dumps(metrics.to_dict()))
        return 0
    values = metrics.to_dict()
    width = max(len(label) for _, label, _ in _ROWS)
    print(
        f"{args.pred} against {args.target} "
        f"(map frame, no superposition; Cα pairs matched within {CA_MATCH_CUTOFF:g} Å)"
    )
    for field, label, spec in _ROWS:
        print(f"  {label:<{width}}  {values[field]:{spec}}")
    return 0
