"""How the traced chains follow the deposited chain on real maps: ``python -m
cryobuild.bench.trace [--cases NAME...] [--networks DETECTOR.pt,GNN.pt ...]``.

Each real map with a model is built as ``bench.real`` builds it (the network pair that did not
train on it, 3 rounds, the stated resolution), and what the last round's linking was given
(`cryobuild.chains.ResiduePredictions`) is linked again with and without
`cryobuild.chains.link_chains`' direction-free step 4. Nodes are paired one-to-one with the
deposited Cα (`cryobuild.evaluate.match_calpha`, 3 Å); two nodes are *neighbours* when their
partners are consecutive residues of one deposited chain. Per map:

* **direction right**: of the nodes with a neighbour after them, the share whose predicted
  C - N points towards that neighbour's Cα (0.5 is a coin toss);
* **in chains >= 10**: traced residues in chains of 10 or more, without -> with step 4;
* **neighbours linked**: neighbour pairs consecutive in a chain, without -> with step 4, and
  of those with step 4 how many run against the deposited direction;
* **right by chain length**: of the nodes in linked chains (with step 4) of 1, 2-3, 4-9 and 10
  or more residues, the share paired with a deposited Cα; the last line sums them over the maps
  (`cryobuild.pipeline.UNASSIGNED_MIN_LENGTH` quotes it).

Figures of ``cryobuild.chains`` (the docstring of step 4) and of the build's low-resolution
warning (`cryobuild.engine.engine.UNCERTAIN_DIRECTION_RESOLUTION`) come from this script.
"""

from __future__ import annotations

import argparse
import contextlib

import numpy as np

from .. import pipeline
from ..chains import link_chains
from ..data import dev_cases
from ..evaluate import match_calpha
from ..models import read_model
from ..pipeline import BuildOptions
from .real import network_pairs, run_map

__all__ = ["main", "neighbour_pairs", "trace_figures"]

#: Residues: chains at least this long count as long enough to thread.
LONG_CHAIN = 10
#: Chain-length classes of the "right by chain length" figures: (label, shortest, longest).
LENGTH_CLASSES = (("1", 1, 1), ("2-3", 2, 3), ("4-9", 4, 9), (">=10", 10, None))


@contextlib.contextmanager
def _recorded_linking(record: list):
    """While active, every build's `link_chains` input is kept in ``record`` (the last one)."""
    original = pipeline.link_chains

    def recording(predictions, *args, **kwargs):
        record[:] = [predictions]
        return original(predictions, *args, **kwargs)

    pipeline.link_chains = recording
    try:
        yield
    finally:
        pipeline.link_chains = original


def neighbour_pairs(node_ca: np.ndarray, reference) -> np.ndarray:
    """int64 ``[P, 2]``: node pairs ``(a, b)`` whose deposited partners (one-to-one, 3 Å) are
    consecutive residues of one chain, ``a``'s partner first; ``node_ca`` ``[N, 3]`` Å."""
    nodes, partners = match_calpha(node_ca, reference.ca)
    node_of = dict(zip(partners.tolist(), nodes.tolist()))
    following = np.flatnonzero((reference.chain_id[1:] == reference.chain_id[:-1])
                               & (np.diff(reference.residue_number) == 1))
    pairs = [(node_of[r], node_of[r + 1]) for r in following.tolist()
             if r in node_of and r + 1 in node_of]
    return np.array(pairs, dtype=np.int64).reshape(-1, 2)


def trace_figures(predictions, reference) -> dict:
    """The figures of the module docstring for one map's linking input ``predictions``."""
    backbone = predictions.backbone
    pairs = neighbour_pairs(backbone[:, 1], reference)
    own = backbone[pairs[:, 0], 2] - backbone[pairs[:, 0], 0]
    towards = backbone[pairs[:, 1], 1] - backbone[pairs[:, 0], 1]
    row = {"neighbour_pairs": len(pairs),
           "direction_right": round(float(np.mean((own * towards).sum(-1) > 0)), 3)}
    true = set(map(tuple, pairs.tolist()))
    for label, direction_free in (("directed", False), ("with_step4", True)):
        chains = link_chains(predictions, direction_free=direction_free)
        links = {(a, b) for chain in chains for a, b in zip(chain[:-1].tolist(), chain[1:].tolist())}
        row[f"in_long_chains_{label}"] = int(sum(len(c) for c in chains if len(c) >= LONG_CHAIN))
        row[f"linked_{label}"] = len(true & links) + len({(b, a) for a, b in true} & links)
        if direction_free:
            row["linked_against"] = len({(b, a) for a, b in true} & links)
    row["traced"] = int(sum(len(c) for c in chains))
    paired = np.zeros(len(backbone), dtype=bool)
    paired[match_calpha(backbone[:, 1], reference.ca)[0]] = True
    for label, shortest, longest in LENGTH_CLASSES:
        nodes = [n for c in chains if shortest <= len(c) <= (longest or len(c)) for n in c.tolist()]
        row[f"nodes_{label}"] = len(nodes)
        row[f"right_{label}"] = int(paired[nodes].sum())
    return row


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", nargs="*", help="only these map folders (names)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--networks", nargs="*", default=None, metavar="DETECTOR.pt,GNN.pt",
                        help="network pairs, tried in order as bench.real tries them")
    args = parser.parse_args(argv)
    pairs = network_pairs(args.networks)
    rows, record = [], []
    for case in dev_cases():
        if case.model_path is None or (args.cases and case.name not in args.cases):
            continue
        with _recorded_linking(record):
            built = run_map(case, pairs, BuildOptions(rounds=3, resolution=case.resolution),
                            args.device, type_rounds=None)
        if "error" in built or not record:
            continue
        row = {"case": case.name, "resolution": case.resolution, "networks": built["networks"]}
        row.update(trace_figures(record[0], read_model(case.model_path)))
        rows.append(row)
    labels = [label for label, _, _ in LENGTH_CLASSES]
    print("\n| map | Å | direction right | traced | in chains >= 10 (without -> with step 4) "
          "| neighbours linked (of pairs) | of them against the deposited direction | "
          + " | ".join(f"right in chains of {label}" for label in labels) + " |")
    print("|---|---|---|---|---|---|---|" + "---|" * len(labels))

    def shares(rows):
        return " | ".join(f"{sum(r[f'right_{l}'] for r in rows)} / {sum(r[f'nodes_{l}'] for r in rows)}"
                          for l in labels)

    for row in sorted(rows, key=lambda r: r["resolution"]):
        print(f"| {row['case']} | {row['resolution']} | {row['direction_right']:.2f} | "
              f"{row['traced']} | {row['in_long_chains_directed']} -> "
              f"{row['in_long_chains_with_step4']} | {row['linked_directed']} -> "
              f"{row['linked_with_step4']} ({row['neighbour_pairs']}) | {row['linked_against']} | "
              f"{shares([row])} |")
    print(f"| all maps | | | | | | | {shares(rows)} |")


if __name__ == "__main__":
    main()
