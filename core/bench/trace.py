"""How the traced chains follow the deposited chain on real maps: ``python -m
cryobuild.bench.trace [--cases NAME...] [--networks DETECTOR.pt,GNN.pt ...] [--candidates
MODE]``.

Each real map with a model is built as ``bench.real`` builds it (the network pair that did not
train on it, 3 rounds, the stated resolution), and what the last round's linking was given
(`cryobuild.chains.ResiduePredictions`) is linked again with and without
`cryobuild.chains.link_chains`' direction-free step 4. Nodes are paired one-to-one with the
deposited Cα (`cryobuild.evaluate.match_calpha`, 3 Å); two nodes are *neighbours* when their
partners are consecutive residues of one deposited chain. Per map:

* **direction right**: of the nodes with a neighbour after them, the share whose predicted
  C - N points towards that neighbour's Cα (0.5 is a coin toss);
* **in chains >= 10**: traced residues in chains of 10 or more, without -> with step 4 ->
  with step 4 and `cryobuild.chains.relink_by_shape` (which builds apply on maps of
  `cryobuild.pipeline.SHAPE_FROM_RESOLUTION` or worse; here on every map);
* **neighbours linked**: neighbour pairs consecutive in a chain, the same three ways, of
  the neighbour pairs and of the deposited chains' consecutive pairs (those with a residue
  no node stands for cannot be linked), and of those with step 4 how many run against the
  deposited direction;
* **right by chain length**: of the nodes in linked chains (as the build links them) of 1, 2-3,
  4-9 and 10 or more residues, the share paired with a deposited Cα; the last line sums them
  over the maps (`cryobuild.pipeline.UNASSIGNED_MIN_LENGTH` quotes it).

A second table says what the links of those chains join and how close the Cα sit:

* **links**: each link of the chains (with step 4, as the build links them: with the shape
  relink on maps of `cryobuild.pipeline.SHAPE_FROM_RESOLUTION` or worse) by the deposited
  residues nearest its two nodes (within 3 Å; not one-to-one, so two nodes on one residue
  show): *next* (consecutive residues of one chain), *skip* (two or three apart in one chain;
  the median Cα-Cα distance of those links beside it), *same* (one residue), *false* (a node
  with no deposited Cα within 3 Å), *other* (anything else: another chain, farther along);
* **chain length**: median and longest chain;
* **skips by Cα step** (one table pooled over the maps): the links on the protein (all but
  *false*) in classes of their Cα-Cα step (`STEP_EDGES`), and how many of them *skip*: where
  the trace slips over a residue, the step runs long (`cryobuild.thread.profiles.LONG_STEP`
  quotes it);
* **within 1.5 Å**: of the deposited Cα in helices and in strands (`secondary_structure`), the
  share with a Cα candidate of the detector within `PLACED` Å, and with a node of the last
  round.

``--candidates MODE`` builds from `bench.candidates`' oracle candidates instead of the
detector's (seed 0's draw): how the trace follows from the candidates (README, "What holds the
bars back": from ``noise:0.6`` nearly every link joins consecutive residues).

Figures of ``cryobuild.chains`` (the docstring of step 4) and of the build's low-resolution
warning (`cryobuild.engine.engine.UNCERTAIN_DIRECTION_RESOLUTION`) come from this script.
"""

from __future__ import annotations

import argparse
import contextlib

import numpy as np
from scipy.spatial import cKDTree

from .. import pipeline
from ..chains import link_chains, relink_by_shape
from ..detect import inference
from ..data import dev_cases
from ..evaluate import match_calpha
from ..models import read_model
from ..pipeline import BuildOptions
from .candidates import OracleCandidates
from .real import network_pairs, run_map

__all__ = ["main", "neighbour_pairs", "secondary_structure", "trace_figures"]

#: Residues: chains at least this long count as long enough to thread.
LONG_CHAIN = 10
#: Chain-length classes of the "right by chain length" figures: (label, shortest, longest).
LENGTH_CLASSES = (("1", 1, 1), ("2-3", 2, 3), ("4-9", 4, 9), (">=10", 10, None))


#: Å: a deposited Cα counts as placed when a candidate or node lies this near (about 0.4 of
#: the 3.8 Å step between residues).
PLACED = 1.5
#: Å: a link's node stands for the deposited residue whose Cα is nearest, within this distance.
LINK_MATCH = 3.0
#: Å: edges of the Cα-step classes of the "skips by Cα step" table.
STEP_EDGES = (3.4, 3.6, 3.9, 4.0, 4.2, 4.5)
#: Å: `secondary_structure`'s rule on the Cα trace: a helix where Cα i to i+3 lies within
#: ``HELIX_I3[1]`` of ``HELIX_I3[0]`` and i to i+4 within ``HELIX_I4[1]`` of ``HELIX_I4[0]``
#: (an α-helix: 5.0-5.5 and 6.2 Å); extended where i to i+2 is over ``STRAND_I2`` and i to i+3
#: over ``STRAND_I3`` (a β-strand: 6.4-7.0 and about 10 Å).
HELIX_I3, HELIX_I4 = (5.3, 0.8), (6.2, 1.2)
STRAND_I2, STRAND_I3 = 6.1, 8.8


@contextlib.contextmanager
def _recorded(module, name: str, record: list):
    """While active, the first argument and the result of every call of ``module.name`` are
    kept in ``record`` (the last call's, one pair)."""
    original = getattr(module, name)

    def recording(first, *args, **kwargs):
        result = original(first, *args, **kwargs)
        record[:] = [(first, result)]
        return result

    setattr(module, name, recording)
    try:
        yield
    finally:
        setattr(module, name, original)


def secondary_structure(reference) -> np.ndarray:
    """int64 ``[R]`` per residue of ``reference`` (a `BuiltModel`): 1 helix, 2 strand, 0
    neither, from its Cα trace (module constants), each run of consecutive residue numbers of a
    chain on its own."""
    ca, labels = reference.ca, np.zeros(reference.num_residues, dtype=np.int64)
    for run in reference.runs():
        def spans(k):
            out = np.full(len(run), np.nan)
            out[:-k] = np.linalg.norm(ca[run[k:]] - ca[run[:-k]], axis=1) if len(run) > k else []
            return out

        with np.errstate(invalid="ignore"):
            helix = ((np.abs(spans(3) - HELIX_I3[0]) < HELIX_I3[1])
                     & (np.abs(spans(4) - HELIX_I4[0]) < HELIX_I4[1]))
            strand = (spans(2) > STRAND_I2) & (spans(3) > STRAND_I3) & ~helix
        own = labels[run]
        for i in np.flatnonzero(helix):
            own[i:i + 4] = 1
        for i in np.flatnonzero(strand):
            if not own[i:i + 3].any():
                own[i:i + 3] = 2
        labels[run] = own
    return labels


def _link_kinds(chains: list[np.ndarray], node_ca: np.ndarray, reference) -> dict:
    """The "links" and "chain length" figures of the module docstring."""
    distance, nearest = cKDTree(reference.ca).query(node_ca)
    found = distance <= LINK_MATCH
    kinds = dict.fromkeys(("next", "skip", "same", "false", "other"), 0)
    skip_lengths = []
    # [classes]: links on the protein, and those that skip, per Cα-step class
    on_protein, skips = np.zeros((2, len(STEP_EDGES) + 1), dtype=np.int64)
    for chain in chains:
        for a, b in zip(chain[:-1].tolist(), chain[1:].tolist()):
            step = float(np.linalg.norm(node_ca[a] - node_ca[b]))
            ra, rb = nearest[a], nearest[b]
            apart = abs(int(reference.residue_number[ra]) - int(reference.residue_number[rb]))
            one_chain = reference.chain_id[ra] == reference.chain_id[rb]
            if not (found[a] and found[b]):
                kind = "false"
            elif ra == rb:
                kind = "same"
            elif one_chain and apart == 1:
                kind = "next"
            elif one_chain and apart in (2, 3):
                kind = "skip"
                skip_lengths.append(step)
            else:
                kind = "other"
            kinds[kind] += 1
            if kind != "false":
                step_class = int(np.searchsorted(STEP_EDGES, step, side="right"))
                on_protein[step_class] += 1
                skips[step_class] += kind == "skip"
    lengths = [len(c) for c in chains] or [0]
    return {**{f"links_{k}": v for k, v in kinds.items()},
            "step_links": on_protein.tolist(), "step_skips": skips.tolist(),
            "skip_length": float(np.median(skip_lengths)) if skip_lengths else float("nan"),
            "median_chain": float(np.median(lengths)), "longest_chain": int(max(lengths))}


def _placed(points: np.ndarray, reference, structure: np.ndarray, kind: int) -> float:
    """Share of ``reference``'s Cα of secondary structure ``kind`` with one of ``points``
    ``[N, 3]`` within `PLACED` Å (NaN when there are none of that kind)."""
    chosen = reference.ca[structure == kind]
    if not len(chosen) or not len(points):
        return float("nan") if not len(chosen) else 0.0
    distance, _ = cKDTree(points).query(chosen)
    return float(np.mean(distance <= PLACED))


def neighbour_pairs(node_ca: np.ndarray, reference) -> np.ndarray:
    """int64 ``[P, 2]``: node pairs ``(a, b)`` whose deposited partners (one-to-one, 3 Å) are
    consecutive residues of one chain, ``a``'s partner first; ``node_ca`` ``[N, 3]`` Å."""
    nodes, partners = match_calpha(node_ca, reference.ca)
    node_of = dict(zip(partners.tolist(), nodes.tolist()))
    following = np.flatnonzero(reference.follows())
    pairs = [(node_of[r], node_of[r + 1]) for r in following.tolist()
             if r in node_of and r + 1 in node_of]
    return np.array(pairs, dtype=np.int64).reshape(-1, 2)


def trace_figures(predictions, reference, candidates: np.ndarray | None = None,
                  resolution: float = 0.0) -> dict:
    """The figures of the module docstring for one map's linking input ``predictions`` (and
    its Cα candidates ``[M, 3]``, Å, for the placement of those; without them NaN) at the
    map's ``resolution`` (Å; it decides whether the build relinks by shape)."""
    backbone = predictions.backbone
    pairs = neighbour_pairs(backbone[:, 1], reference)
    own = backbone[pairs[:, 0], 2] - backbone[pairs[:, 0], 0]
    towards = backbone[pairs[:, 1], 1] - backbone[pairs[:, 0], 1]
    row = {"neighbour_pairs": len(pairs), "deposited_pairs": int(reference.follows().sum()),
           "direction_right": round(float(np.mean((own * towards).sum(-1) > 0)), 3)}
    true = set(map(tuple, pairs.tolist()))
    linked = {}
    for label, direction_free, by_shape in (("directed", False, False),
                                            ("with_step4", True, False),
                                            ("with_shape", True, True)):
        chains = (relink_by_shape(linked["with_step4"], backbone[:, 1]) if by_shape
                  else link_chains(predictions, direction_free=direction_free))
        linked[label] = chains
        links = {(a, b) for chain in chains for a, b in zip(chain[:-1].tolist(), chain[1:].tolist())}
        row[f"in_long_chains_{label}"] = int(sum(len(c) for c in chains if len(c) >= LONG_CHAIN))
        row[f"linked_{label}"] = len(true & links) + len({(b, a) for a, b in true} & links)
        if direction_free and not by_shape:
            row["linked_against"] = len({(b, a) for a, b in true} & links)
    chains = linked["with_shape" if resolution >= pipeline.SHAPE_FROM_RESOLUTION else "with_step4"]
    row["traced"] = int(sum(len(c) for c in chains))
    paired = np.zeros(len(backbone), dtype=bool)
    paired[match_calpha(backbone[:, 1], reference.ca)[0]] = True
    for label, shortest, longest in LENGTH_CLASSES:
        nodes = [n for c in chains if shortest <= len(c) <= (longest or len(c)) for n in c.tolist()]
        row[f"nodes_{label}"] = len(nodes)
        row[f"right_{label}"] = int(paired[nodes].sum())
    row.update(_link_kinds(chains, backbone[:, 1], reference))
    structure = secondary_structure(reference)
    for kind, label in ((1, "helix"), (2, "strand")):
        row[f"candidates_{label}"] = (_placed(candidates, reference, structure, kind)
                                      if candidates is not None else float("nan"))
        row[f"nodes_{label}"] = _placed(backbone[:, 1], reference, structure, kind)
    return row


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", nargs="*", help="only these map folders (names)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--networks", nargs="*", default=None, metavar="DETECTOR.pt,GNN.pt",
                        help="network pairs, tried in order as bench.real tries them")
    parser.add_argument("--candidates", default=None, metavar="MODE",
                        help="build from bench.candidates' oracle MODE (e.g. noise:0.6, "
                             "library:12) instead of the detector's candidates")
    args = parser.parse_args(argv)
    try:
        oracle = OracleCandidates(args.candidates) if args.candidates else contextlib.nullcontext()
    except ValueError as err:
        parser.error(str(err))
    pairs = network_pairs(args.networks)
    rows, record, detected = [], [], []
    for case in dev_cases():
        if case.model_path is None or (args.cases and case.name not in args.cases):
            continue
        if args.candidates:
            oracle.use(read_model(case.model_path), np.random.default_rng(100))  # seed 0's draw
        with oracle, _recorded(pipeline, "link_chains", record), \
                _recorded(inference, "detect_calphas", detected):
            built = run_map(case, pairs, BuildOptions(rounds=3, resolution=case.resolution),
                            args.device, reference_figures=False)
        if "error" in built or not record:
            continue
        row = {"case": case.name, "resolution": case.resolution, "networks": built["networks"]}
        row.update(trace_figures(record[0][0], read_model(case.model_path),
                                 detected[0][1].points.xyz if detected else None,
                                 case.resolution))
        rows.append(row)
    labels = [label for label, _, _ in LENGTH_CLASSES]
    print("\n| map | Å | direction right | traced | in chains >= 10 (without -> with step 4 -> "
          "with shapes) | neighbours linked, the same three ways (of pairs, of deposited pairs) | of them against the deposited direction | "
          + " | ".join(f"right in chains of {label}" for label in labels) + " |")
    print("|---|---|---|---|---|---|---|" + "---|" * len(labels))

    def shares(rows):
        return " | ".join(f"{sum(r[f'right_{l}'] for r in rows)} / {sum(r[f'nodes_{l}'] for r in rows)}"
                          for l in labels)

    for row in sorted(rows, key=lambda r: r["resolution"]):
        print(f"| {row['case']} | {row['resolution']} | {row['direction_right']:.2f} | "
              f"{row['traced']} | {row['in_long_chains_directed']} -> "
              f"{row['in_long_chains_with_step4']} -> {row['in_long_chains_with_shape']} | "
              f"{row['linked_directed']} -> {row['linked_with_step4']} -> "
              f"{row['linked_with_shape']} ({row['neighbour_pairs']}, {row['deposited_pairs']}) | {row['linked_against']} | "
              f"{shares([row])} |")
    print(f"| all maps | | | | | | | {shares(rows)} |")

    kinds = ("next", "skip", "same", "false", "other")
    print("\n| map | Å | links | " + " | ".join(kinds) + " | skip Cα-Cα, Å | median chain | "
          "longest chain | helix Cα: candidate / node within 1.5 Å | strand Cα: candidate / node |")
    print("|---|---|---|" + "---|" * (len(kinds) + 5))
    for row in sorted(rows, key=lambda r: r["resolution"]):
        links = sum(row[f"links_{k}"] for k in kinds)
        print(f"| {row['case']} | {row['resolution']} | {links} | "
              + " | ".join(f"{row[f'links_{k}'] / max(links, 1):.2f}" for k in kinds)
              + f" | {row['skip_length']:.1f} | {row['median_chain']:.0f} | {row['longest_chain']} | "
              f"{row['candidates_helix']:.2f} / {row['nodes_helix']:.2f} | "
              f"{row['candidates_strand']:.2f} / {row['nodes_strand']:.2f} |")

    labels = ([f"< {STEP_EDGES[0]:g}"] + [f"{a:g}-{b:g}" for a, b in zip(STEP_EDGES, STEP_EDGES[1:])]
              + [f">= {STEP_EDGES[-1]:g}"])
    print("\n| Cα step, Å | links on the protein | skip | share |\n|---|---|---|---|")
    for step_class, label in enumerate(labels):
        links = sum(row["step_links"][step_class] for row in rows)
        skipped = sum(row["step_skips"][step_class] for row in rows)
        print(f"| {label} | {links} | {skipped} | {skipped / max(links, 1):.2f} |")


if __name__ == "__main__":
    main()
