"""Benchmark whole builds on every real map with a deposited model: ``python -m
cryobuild.bench.real``.

Each map is built (through the engine, as ``cryobuild build`` does, with the map's stated
resolution unless ``--estimate-resolution`` or ``--resolution R``) by the first network pair of ``--networks`` that
did not train on it: a checkpoint lists the real maps it trained on (``real_maps``, see
`cryobuild.data.REAL_FOLDS`). A map that every pair has seen is still built, and flagged: its
figures are not figures and stay out of the means. One JSON line per map, then a Markdown table
(one row per map) and the means per resolution band (<= 3.5 Å, 3.5-4.5 Å, > 4.5 Å):

* detector recall / precision of the Cα candidates (3 Å, one-to-one);
* residue-type accuracy of the graph network from the deposited Cα plus noise (``bench.gnn``);
* raw and final Cα recall and sequence recall (`cryobuild.evaluate`, map frame), and of the
  final model's threaded residues on a deposited Cα the share numbered right (its register);
* how well the final model's residue types are informed (`type_information`): the negative
  log-likelihood, nats, of the deposited types in its residue-type probabilities
  (``aa_probabilities.csv``), residues within `TYPE_MATCH_DISTANCE` of a deposited Cα (3.00 is
  a uniform guess). Threading turns these into sequence: the figure moves before sequence
  recall does, which crosses an E-value cut one chain at a time;
* the fit to the map of the final model and of the deposited one (CC_mask, `map_fit`, at the
  resolution the build read the map at), and last how well the unassigned chains' own fit
  tells those on the deposited model from the others (`print_unassigned_fit`), and how many
  neighbouring residues of a chain are numbered out of reach of each other (`print_out_of_reach`);
* seconds of the build; the networks; whether they saw the map;
* last, pooled over every build of a map the networks did not see, how right the best
  placement offered for each unassigned chain (``unassigned_placements.csv``,
  `cryobuild.thread.hints`) is, by its E-value, and per map the residues numbered right in
  the placements named to the user (`print_placements`); and what a user gets who assigns
  every placement named to them (`cryobuild.assign`, as ``cryobuild assign`` and the plugin
  do): the final model's sequence recall and threaded residues numbered right before and
  after (`assigned_figures`).

``--keep FOLDER`` writes each build's output folder (as ``cryobuild build -o`` does) into
``FOLDER/<map>``, e.g. to look at the raw models' chains.

``--seeds S ...`` builds every map once per seed (`pipeline.BuildOptions.seed`: the graph
network's random initial frames and threading's random numbers) and prints the tables of each, then
each band's final Cα and sequence recall per seed and their mean and range: at 3.5-4.5 Å which
chains thread changes from one seed to the next (docs/results_log.md, "Sixteenth stop"), so a
change there is measured against that range, not against one build; last, per map the mean of
every column over the seeds (the register pooled over the builds' threaded residues) with the
range of its final sequence recall, and those means per band (README's main table).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from ..build_outputs import write_build
from ..checkpoints import checkpoint_path, trained_on
from ..cli.build import (add_blind_check_arg, add_restarts_arg, add_threader_args, build_with_engine,
                         threader_options)
from ..data import dev_cases
from ..evaluate import CA_MATCH_CUTOFF, evaluate, offered_numbering
from ..map_fit import map_fit
from ..maps import read_map
from ..models import read_model
from ..pipeline import BuildOptions, Networks
from ..residues import NUM_AA
from ..sequences import read_fasta
from ..thread.hints import NAMED_EVALUE
from ..validation import numbered_out_of_reach
from .build import model_sequences
from .detect import score
from .gnn import folder_case, run_case as run_gnn_case

__all__ = ["BANDS", "NetworkPair", "main", "modelled_cases", "network_pairs", "pair_for"]

#: Resolution bands of the means (Å, upper bounds inclusive).
BANDS = (("<= 3.5 Å", 0.0, 3.5), ("3.5-4.5 Å", 3.5, 4.5), ("> 4.5 Å", 4.5, 99.0))
#: Rounds of the graph network from the deposited Cα that read its residue types (the builds'
#: own number).
TYPE_ROUNDS = 3
#: Network pairs tried in order when ``--networks`` is not given: the bundled defaults, then
#: the fine-tune on the other fold (whichever exist).
DEFAULT_PAIRS = (("detect", "gnn"), ("detect_foldA", "gnn_foldA"))


class NetworkPair:
    """A detector and a graph network checkpoint, and the real maps either trained on."""

    def __init__(self, detector: Path, gnn: Path, structgen: Path | None = None):
        self.detector, self.gnn, self.structgen = Path(detector), Path(gnn), structgen
        self.seen = trained_on(self.detector, self.gnn)
        self._networks = None

    @property
    def label(self) -> str:
        return f"{self.detector.stem}+{self.gnn.stem}"

    def networks(self, device) -> Networks:
        if self._networks is None:
            self._networks = Networks.load(device, gnn=self.gnn, detector=self.detector,
                                           structgen=self.structgen)
        return self._networks


def network_pairs(specs: list[str] | None, structgen: Path | None = None) -> list[NetworkPair]:
    """The pairs of ``specs`` ("DETECTOR.pt,GNN.pt" each), or the bundled `DEFAULT_PAIRS`, each
    with the Structure Generator ``structgen`` (default: the bundled one)."""
    if specs:
        pairs = []
        for spec in specs:
            detector, _, gnn = spec.partition(",")
            pairs.append(NetworkPair(Path(detector), Path(gnn), structgen))
        return pairs
    return [NetworkPair(checkpoint_path(d), checkpoint_path(g), structgen) for d, g in DEFAULT_PAIRS
            if checkpoint_path(d).exists() and checkpoint_path(g).exists()]


def pair_for(name: str, pairs: list[NetworkPair]) -> tuple[NetworkPair, bool]:
    """The first of ``pairs`` that did not train on the real map ``name``, or the first pair
    when all did; and whether that pair trained on it (its figures are then no figures)."""
    unseen = [pair for pair in pairs if name not in pair.seen]
    return (unseen[0], False) if unseen else (pairs[0], True)


def modelled_cases(names: list[str] | None = None, max_resolution: float | None = None) -> list:
    """The real maps with a deposited model (`data.DevCase`): those ``names``, or when none are
    given all of them at ``max_resolution`` Å or better (all, for None)."""
    cases = [case for case in dev_cases() if case.model_path is not None]
    if names:
        return [case for case in cases if case.name in names]
    return [case for case in cases if max_resolution is None or case.resolution <= max_resolution]


#: Å: a final residue's types are scored against the deposited residue whose Cα is nearest, when
#: it is this near (`type_information`).
TYPE_MATCH_DISTANCE = 2.0


def type_information(model, aa_probs: np.ndarray, reference) -> float:
    """Mean negative log-likelihood (nats) of the deposited residue types under ``aa_probs``
    ``[R, 20]`` (``model``'s residues), over the residues of ``model`` within
    `TYPE_MATCH_DISTANCE` Å of a deposited Cα of known type; NaN when there are none."""
    from scipy.spatial import cKDTree

    if not model.num_residues or not reference.num_residues:
        return float("nan")
    distance, nearest = cKDTree(reference.ca).query(model.ca)
    scored = (distance <= TYPE_MATCH_DISTANCE) & (reference.aatype[nearest] < NUM_AA)
    if not scored.any():
        return float("nan")
    truth = reference.aatype[nearest[scored]]
    likelihood = np.asarray(aa_probs)[np.flatnonzero(scored), truth]
    return float(-np.log(np.maximum(likelihood, 1e-9)).mean())


def run_map(case, pairs: list[NetworkPair], options: BuildOptions, device, *,
            reference_figures: bool = True, keep: Path | None = None) -> dict:
    """Build one real map with the first pair that did not see it, and score it; with
    ``reference_figures`` also what does not depend on the build (the residue-type accuracy
    from the deposited Cα in `TYPE_ROUNDS` rounds, read at the resolution the build read the
    map at; the deposited model's fit to the map); the build's outputs go to
    ``keep / case.name`` when ``keep`` is given."""
    pair, seen = pair_for(case.name, pairs)
    networks = pair.networks(device)
    reference = read_model(case.model_path)
    sequences = read_fasta(case.fasta_path) if case.fasta_path else model_sequences(reference)
    row = {"case": case.name, "resolution": case.resolution, "residues": reference.num_residues,
           "networks": pair.label, "seen": seen, "seed": options.seed}
    started = time.time()
    try:
        density = read_map(case.map_path)
        result, _ = build_with_engine(density, sequences, options, quiet=True, networks=networks)
    except Exception as err:  # noqa: BLE001 - a failed map is reported, not fatal
        row.update(error=str(err), seconds=round(time.time() - started, 1))
        print(json.dumps(row), flush=True)
        return row
    row["seconds"] = round(time.time() - started, 1)
    if keep is not None:
        write_build(result, keep / case.name, build_id=f"bench.real {pair.label}")
    detected = score(result.points.xyz, reference)
    row.update(detector_recall=round(detected["recall"], 3), detector_precision=round(detected["precision"], 3),
               map_resolution=round(result.view.map_resolution, 2))
    if reference_figures:
        # at the resolution the build read (`--resolution`, `--estimate-resolution`)
        types = run_gnn_case(folder_case(case.folder, result.view.map_resolution), networks.gnn,
                             rounds=TYPE_ROUNDS, device=networks.device)
        row["type_accuracy"] = round(types["aa_accuracy"], 3)
        row["deposited_cc_mask"] = round(
            map_fit(reference, density, result.view.map_resolution).cc_mask, 3)
    for label, model in (("raw", result.raw), ("final", result.final)):
        metrics = evaluate(model, reference)
        row[f"{label}_ca_recall"] = round(metrics.ca_recall, 3)
        row[f"{label}_ca_precision"] = round(metrics.ca_precision, 3)
        row[f"{label}_sequence_recall"] = round(metrics.sequence_recall, 3)
        row[f"{label}_sequence_match"] = round(metrics.sequence_match, 3)
    # the last metrics: the final model's (counts, so that means over builds pool residues)
    row["final_threaded_matched"] = metrics.n_threaded_matched
    row["final_numbered_right"] = round(metrics.register_accuracy * metrics.n_threaded_matched)
    if metrics.n_threaded_matched:  # none threaded, no share
        row["final_register"] = round(metrics.register_accuracy, 3)
    row["final_type_nll"] = round(type_information(result.final, result.final_aa_probs, reference), 3)
    row["final_cc_mask"] = round(result.fit.cc_mask, 3)  # at the resolution read, as the deposited's
    row["unassigned_fit"] = unassigned_fit_figures(result, reference)
    row["final_out_of_reach"] = numbered_out_of_reach(result.final)
    row["placements"] = placement_figures(result.final, result.placements, sequences, reference)
    row.update(assigned_figures(result, sequences, networks, reference))
    print(json.dumps(row), flush=True)
    return row


def assigned_figures(result, sequences, networks, reference) -> dict:
    """The final model with every placement named to the user assigned (`cryobuild.assign`,
    one after the other, best first), scored: ``assigned_chains``, ``assigned_sequence_recall``,
    ``assigned_threaded_matched`` and ``assigned_numbered_right`` (counts, as the final
    model's), ``assigned_ca_recall``."""
    from ..assign import assign_placement, with_assignment
    from ..thread.hints import named_placements

    model, probs, reports = result.final, result.final_aa_probs, result.final_chains
    named = named_placements(result.placements)
    for placement in named:
        assignment = assign_placement(result.view, model, placement, sequences, networks)
        model, probs, reports = with_assignment(model, probs, reports, assignment)
    metrics = evaluate(model, reference)
    return {"assigned_chains": len(named),
            "assigned_ca_recall": round(metrics.ca_recall, 3),
            "assigned_sequence_recall": round(metrics.sequence_recall, 3),
            "assigned_threaded_matched": metrics.n_threaded_matched,
            "assigned_numbered_right": round(metrics.register_accuracy * metrics.n_threaded_matched)}


def unassigned_fit_figures(result, reference) -> list[list[float]]:
    """``[CC, residues, share of their Cα within `evaluate.CA_MATCH_CUTOFF` of a deposited Cα]``
    of each unassigned chain of the final model (its fit to the map, `map_fit`)."""
    from scipy.spatial import cKDTree

    distance, _ = cKDTree(reference.ca).query(result.final.ca)
    figures = []
    for report in result.final_chains:
        cc = result.fit.chains.get(report.chain_id, np.nan)
        if report.threaded or not np.isfinite(cc):
            continue
        on = distance[result.final.chain_id == report.chain_id] <= CA_MATCH_CUTOFF
        figures.append([round(float(cc), 3), int(on.size), round(float(on.mean()), 3)])
    return figures


def print_out_of_reach(rows: list[dict]) -> None:
    """The residues numbered out of reach (`validation.numbered_out_of_reach`) over all builds."""
    built = [row for row in rows if "final_out_of_reach" in row]
    if built:
        counts = {row["case"]: 0 for row in built}
        for row in built:
            counts[row["case"]] += row["final_out_of_reach"]
        where = ", ".join(f"{case} {n}" for case, n in counts.items() if n) or "none"
        print(f"\nNeighbouring residues of a chain numbered out of reach of each other, over "
              f"{len(built)} builds: {sum(counts.values())} ({where})")


#: CC under which `print_unassigned_fit` counts an unassigned chain's residues apart.
LOW_CHAIN_CC = 0.6


def print_unassigned_fit(rows: list[dict]) -> None:
    """How well an unassigned chain's fit to the map (`unassigned_fit_figures`) tells whether it
    lies on the deposited model (at least half its Cα on a deposited Cα), pooled over the
    builds of maps the networks did not see: the area under the ROC curve of the chains' CC,
    and the share of residues on a deposited Cα in chains under and over `LOW_CHAIN_CC`. A
    neighbour that a map's reference lacks (TMV's subunits) counts as off it."""
    pooled = np.array([f for row in rows if not row["seen"] for f in row.get("unassigned_fit", [])],
                      dtype=np.float64).reshape(-1, 3)
    on = pooled[:, 2] >= 0.5
    if not on.any() or on.all():
        return
    cc_on, cc_off = pooled[on, 0], pooled[~on, 0]
    auc = float(np.mean((cc_on[:, None] > cc_off[None]) + 0.5 * (cc_on[:, None] == cc_off[None])))
    low = pooled[:, 0] < LOW_CHAIN_CC

    def share(members):
        return (pooled[members, 1] * pooled[members, 2]).sum() / max(pooled[members, 1].sum(), 1)

    print(f"\nUnassigned chains' fit to the map (CC), {len(pooled)} chains of "
          f"{len([r for r in rows if not r['seen']])} builds: {int(on.sum())} on the deposited "
          f"model, {int((~on).sum())} off it; their CC tells them apart at an area under the ROC "
          f"curve of {auc:.2f}; residues on a deposited Cα in chains under CC {LOW_CHAIN_CC:g}: "
          f"{share(low):.2f} of {int(pooled[low, 1].sum())}, over it {share(~low):.2f} of "
          f"{int(pooled[~low, 1].sum())}")


#: Sequence positions by which an offered placement may be off and still count as right
#: (`placement_figures`): a user who places a chain there finds its register nearby.
PLACEMENT_TOLERANCE = 2
#: E-value bins of `print_placements`.
PLACEMENT_BINS = (0.0, 0.01, 0.03, 0.1, 0.3, 1.0)


def placement_figures(final, placements, sequences, reference) -> list[list[float]]:
    """``[E-value, residues on a deposited Cα, of those numbered within
    `PLACEMENT_TOLERANCE`]`` of each unassigned chain's best placement (rank 1) in ``final``."""
    residues = {sequence.name: sequence.residues for sequence in sequences}
    figures = []
    for placement in placements:
        if placement.rank != 1:
            continue
        rows = np.flatnonzero(final.chain_id == placement.chain_id)
        row_of = dict(zip(final.residue_number[rows].tolist(), rows.tolist()))
        ca = final.ca[[row_of[number] for number, _ in placement.aligned]]
        offered = np.array([position for _, position in placement.aligned])
        on_protein, right = offered_numbering(ca, offered, residues[placement.sequence], reference,
                                              tolerance=PLACEMENT_TOLERANCE)
        figures.append([float(f"{placement.evalue:.3g}"), on_protein, right])
    return figures


def print_placements(rows: list[dict]) -> None:
    """The best placements of the unassigned chains (`placement_figures`) of the builds of maps
    the networks did not see, pooled by E-value: of those whose chain lies on the deposited
    model, how many are mostly right (at least half the residues on a deposited Cα numbered
    within `PLACEMENT_TOLERANCE`), and the residues right of those on a deposited Cα; then how
    many lie off it (e.g. on TMV's neighbouring subunits, which its reference lacks: not judged)."""
    pooled = [figures for row in rows if not row["seen"] for figures in row.get("placements", [])]
    if not pooled:
        return
    print(f"\nBest placement of each unassigned chain (unassigned_placements.csv), "
          f"{len([r for r in rows if not r['seen']])} builds:")
    print("| E-value | on the deposited model | mostly right | their residues on it | of those "
          "right | off it |")
    print("|---|---|---|---|---|---|")
    for low, high in zip(PLACEMENT_BINS[:-1], PLACEMENT_BINS[1:]):
        members = [f for f in pooled if low < f[0] <= high or (low == 0 and f[0] == 0)]
        judged = [f for f in members if f[1] > 0]
        on_protein = sum(f[1] for f in judged)
        right = sum(f[2] for f in judged)
        mostly = sum(f[2] >= 0.5 * f[1] for f in judged)
        share = f"{right / on_protein:.2f}" if on_protein else "-"
        print(f"| {low:g}-{high:g} | {len(judged)} | {mostly} | {on_protein} | {right} ({share}) "
              f"| {len(members) - len(judged)} |")
    # what the placements a build names to the user hold, per map
    shares = {}
    for row in rows:
        if not row["seen"]:
            right = sum(f[2] for f in row.get("placements", []) if f[0] <= NAMED_EVALUE)
            shares.setdefault(row["case"], []).append(right / row["residues"])
    print(f"\nResidues numbered right in the placements named to the user (E <= {NAMED_EVALUE:g}), "
          "per build, as a share of the map's residues: "
          + ", ".join(f"{case} {np.mean(values):.3f}" for case, values in sorted(shares.items())
                      if np.mean(values) > 0))
    assigned = [row for row in rows if not row["seen"] and "assigned_sequence_recall" in row]
    if not assigned:
        return
    print("\nEvery named placement assigned (cryobuild assign), mean per build; threaded numbered "
          "right pooled over the threaded residues on a deposited Cα:")
    print("| map | builds | chains assigned | final Cα | assigned | final seq. | assigned | "
          "numbered right | assigned |")
    print("|---|---|---|---|---|---|---|---|---|")
    for case in sorted({row["case"] for row in assigned}):
        builds = [row for row in assigned if row["case"] == case]

        def mean(key):
            return np.mean([row[key] for row in builds])

        def register(prefix):
            matched = sum(row[f"{prefix}_threaded_matched"] for row in builds)
            right = sum(row[f"{prefix}_numbered_right"] for row in builds)
            return f"{right / matched:.2f}" if matched else "-"

        print(f"| {case} | {len(builds)} | {mean('assigned_chains'):.1f} | "
              f"{mean('final_ca_recall'):.2f} | {mean('assigned_ca_recall'):.2f} | "
              f"{mean('final_sequence_recall'):.2f} | {mean('assigned_sequence_recall'):.2f} | "
              f"{register('final')} | {register('assigned')} |")


COLUMNS = (("detector_recall", "det. recall"), ("detector_precision", "det. precision"),
           ("type_accuracy", "types from deposited Cα"), ("raw_ca_recall", "raw Cα"),
           ("raw_sequence_recall", "raw seq."), ("final_ca_recall", "final Cα"),
           ("final_ca_precision", "final precision"), ("final_sequence_recall", "final seq."),
           ("final_register", "threaded numbered right"), ("final_type_nll", "final types, nats"),
           ("final_cc_mask", "final CC_mask"), ("deposited_cc_mask", "deposited CC_mask"),
           ("seconds", "s"))


def figure(rows: list[dict], key: str) -> float:
    """The mean of ``key`` over ``rows`` (builds): a failed build counts as 0; the types from the
    deposited Cα and the deposited model's fit are measured once per map (`run_map`'s
    ``reference_figures``), so builds without them are left out, as are those without final
    types (a failed build); the register pools the threaded residues of all builds (NaN when
    none threaded)."""
    if key == "final_register":
        judged = sum(r.get("final_threaded_matched", 0) for r in rows)
        return sum(r.get("final_numbered_right", 0) for r in rows) / judged if judged else np.nan
    if key in ("final_type_nll", "type_accuracy", "deposited_cc_mask"):
        values = [r[key] for r in rows if key in r]
        return float(np.mean(values)) if values else np.nan
    return float(np.mean([r.get(key, 0.0) for r in rows]))


def _cell(value: float, key: str) -> str:
    return f"{value:.0f}" if key == "seconds" else f"{value:.2f}"


def print_tables(rows: list[dict]) -> None:
    print("\n| map | Å | residues | " + " | ".join(label for _, label in COLUMNS) + " | networks | saw it |")
    print("|---|---|---|" + "---|" * len(COLUMNS) + "---|---|")
    for row in rows:
        if "error" in row:
            cells = ["failed: " + row["error"][:60]] + [""] * (len(COLUMNS) - 1)
        else:
            # rows of outputs older than a column print NaN there
            cells = [f"{row.get(key, np.nan):.2f}" if key != "seconds" else f"{row[key]:.0f}"
                     for key, _ in COLUMNS]
        print(f"| {row['case']} | {row['resolution']} | {row['residues']} | " + " | ".join(cells)
              + f" | {row['networks']} | {'yes' if row['seen'] else 'no'} |")
    print("\nMeans over maps the networks did not train on (a failed build counts as 0):")
    print("| band | maps | " + " | ".join(label for _, label in COLUMNS) + " |")
    print("|---|---|" + "---|" * len(COLUMNS))
    for band, low, high in BANDS:
        members = [r for r in rows if low < r["resolution"] <= high and not r["seen"]]
        if not members:
            continue
        cells = [_cell(figure(members, key), key) for key, _ in COLUMNS]
        print(f"| {band} | {len(members)} | " + " | ".join(cells) + " |")


def print_map_means(rows: list[dict]) -> None:
    """Per map, each column's `figure` over its builds (one per seed) with the range of the
    final sequence recall over them; then per band the mean over its maps the networks did not
    train on (the register pooled over their builds)."""
    cases = sorted({r["case"] for r in rows})
    print("\nMeans over the seeds:")
    print("| map | Å | residues | " + " | ".join(label for _, label in COLUMNS)
          + " | final seq., seeds' range | networks | saw it |")
    print("|---|---|---|" + "---|" * (len(COLUMNS) + 3))
    per_map = {}
    for case in cases:
        builds = [r for r in rows if r["case"] == case]
        per_map[case] = {key: figure(builds, key) for key, _ in COLUMNS}
        sequence = [r.get("final_sequence_recall", 0.0) for r in builds]
        first = builds[0]
        print(f"| {case} | {first['resolution']} | {first['residues']} | "
              + " | ".join(_cell(per_map[case][key], key) for key, _ in COLUMNS)
              + f" | {min(sequence):.2f}-{max(sequence):.2f} | {first['networks']} | "
              f"{'yes' if first['seen'] else 'no'} |")
    print("| band | maps | " + " | ".join(label for _, label in COLUMNS) + " |")
    print("|---|---|" + "---|" * len(COLUMNS))
    for band, low, high in BANDS:
        members = [c for c in cases if any(r["case"] == c and low < r["resolution"] <= high
                                          and not r["seen"] for r in rows)]
        if not members:
            continue
        cells = [_cell(figure([r for r in rows if r["case"] in members], key) if key == "final_register"
                       else float(np.nanmean([per_map[c][key] for c in members])), key)
                 for key, _ in COLUMNS]
        print(f"| {band} | {len(members)} | " + " | ".join(cells) + " |")


def print_seed_spread(rows: list[dict]) -> None:
    """Each band's mean final Cα and sequence recall per ``seed`` of ``rows`` (maps the networks
    did not train on; a failed build counts as 0), with their mean and range over the seeds."""
    seeds = sorted({row["seed"] for row in rows})
    print("\n| band | " + " | ".join(f"seed {seed}" for seed in seeds)
          + " | mean | range | (final Cα / final sequence recall)")
    print("|---|" + "---|" * (len(seeds) + 2))
    for band, low, high in BANDS:
        figures = []
        for seed in seeds:
            members = [r for r in rows if r["seed"] == seed and low < r["resolution"] <= high
                       and not r["seen"]]
            if members:
                figures.append([np.mean([r.get(key, 0.0) for r in members])
                                for key in ("final_ca_recall", "final_sequence_recall")])
        if not figures:
            continue
        figures = np.array(figures)
        cells = [f"{ca:.2f} / {seq:.2f}" for ca, seq in figures]
        spread = np.ptp(figures, axis=0)
        print(f"| {band} | " + " | ".join(cells) + f" | {figures[:, 0].mean():.2f} / "
              f"{figures[:, 1].mean():.2f} | {spread[0]:.2f} / {spread[1]:.2f} |")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--networks", nargs="*", default=None, metavar="DETECTOR.pt,GNN.pt",
                        help="network pairs, tried in order (default: the bundled detect.pt+gnn.pt, "
                             "then detect_foldA.pt+gnn_foldA.pt)")
    parser.add_argument("--cases", nargs="*", default=None, help="only these map folders (names)")
    parser.add_argument("--rounds", type=int, default=3)
    given = parser.add_mutually_exclusive_group()
    given.add_argument("--estimate-resolution", action="store_true",
                       help="build without the stated resolution (estimated from the map)")
    given.add_argument("--resolution", type=float, default=None, metavar="Å",
                       help="build every map at this resolution instead of its stated one (e.g. "
                            "a segment whose local resolution is worse; the bands stay by the "
                            "stated one)")
    parser.add_argument("--detection-threshold", type=float, default=None,
                        help="least Cα probability of a candidate (default: the detector's)")
    add_blind_check_arg(parser)
    add_restarts_arg(parser)
    add_threader_args(parser, checkpoint=True)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--from-output", nargs="*", type=Path, default=None, metavar="FILE",
                        help="print the tables of the JSON lines in these earlier outputs of this "
                             "benchmark (e.g. one run per fold) instead of building")
    parser.add_argument("--keep", type=Path, default=None, metavar="FOLDER",
                        help="write each build's output folder into FOLDER/<map>")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], metavar="S",
                        help="build every map once per seed (initial frames, threading) and print "
                             "each band's spread over the seeds (default: 0)")
    args = parser.parse_args(argv)
    if args.from_output:
        rows = [json.loads(line) for path in args.from_output for line in path.read_text().splitlines()
                if line.startswith('{"case"')]
        for seed in sorted({row.get("seed", 0) for row in rows}):
            print_tables(sorted((r for r in rows if r.get("seed", 0) == seed), key=lambda r: r["case"]))
        if len({row.get("seed", 0) for row in rows}) > 1:
            print_seed_spread([{"seed": 0, **row} for row in rows])
            print_map_means(rows)
        print_placements(rows)
        print_unassigned_fit(rows)
        print_out_of_reach(rows)
        return

    pairs = network_pairs(args.networks, args.structgen)
    rows = []
    how = ("estimated" if args.estimate_resolution
           else f"{args.resolution} Å" if args.resolution else "as stated")
    for seed in args.seeds:
        seeded = []
        for case in modelled_cases(args.cases):
            resolution = None if args.estimate_resolution else args.resolution or case.resolution
            options = BuildOptions(rounds=args.rounds, resolution=resolution,
                                   detection_threshold=args.detection_threshold,
                                   blind_check=args.blind_check, restarts=args.restarts, seed=seed,
                                   **threader_options(args))
            keep = args.keep / f"seed{seed}" if args.keep and len(args.seeds) > 1 else args.keep
            # the types from the deposited Cα and its fit do not depend on the seed: read once
            seeded.append(run_map(case, pairs, options, args.device, keep=keep,
                                  reference_figures=seed == args.seeds[0]))
        print(f"\nseed {seed}: {args.rounds} rounds, {args.threader} threader; resolution {how}; "
              f"networks: {', '.join(p.label for p in pairs)}")
        print_tables(seeded)
        rows += seeded
    if len(args.seeds) > 1:
        print_seed_spread(rows)
        print_map_means(rows)
    print_placements(rows)
    print_unassigned_fit(rows)
    print_out_of_reach(rows)


if __name__ == "__main__":
    main()
