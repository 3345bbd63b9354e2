"""Benchmark the graph network: ``python -m cryobuild.bench.gnn CASEDIR... [--simulated N]``.

Each case starts from the reference Cα positions plus Gaussian noise (N(0, 1/√3) Å per axis,
about 0.9 Å mean error, 1 Å rms; ``--start-noise`` sets the rms) with random frames, runs the network for ``--rounds`` rounds and scores
node ``i`` against reference residue ``i`` (the nodes are the reference residues, so no
matching is needed). One JSON line per case, then one with the means:

* ``aa_accuracy``: top-1 residue type over residues of known type, 0..1;
* ``ca_rmsd``, ``bb_rmsd``: true RMSD (Å) of Cα and of N, Cα, C;
* ``ca_rms_along``, ``ca_rms_across``: the Cα error of residues with both chain neighbours,
  split into its component along the chain (the reference's Cα(i-1) -> Cα(i+1)) and the rest,
  as rms per axis (Å; the noisy start has N(0, rms / √3) on each): whether the network moves a
  node back along its chain (the phase of a run) as well as across it;
* ``confidence_error_corr``: Pearson r between the confidence (0-100) and the actual Cα error
  (negative is good: -1 would be a perfect ranking);
* ``sidechain_rmsd``: RMSD (Å) of the side-chain atoms (atom14 slots from CB on) of residues
  whose type is predicted right (symmetric atoms, e.g. PHE CD1/CD2, are not swapped);
* ``direction_right``: of the residues followed by the next one in their chain, the share whose
  predicted C - N points towards that residue's Cα (0.5 is a coin toss): whether the network
  reads which way the chain runs;
* ``seconds``: wall time of the refinement.

Case folders hold a map, ``ref.cif`` and ``case.json`` (``{"map": FILE, "resolution": Å}``), as
in ``shared/data/real/*``, and optionally ``seq.fasta`` (else the model's declared sequences).
``--simulated N`` adds N held-out structures of the validation split (by sequence, see
`cryobuild.data`) with maps simulated at ``--resolution``. ``--start detected`` refines from
the detector's Cα instead (scored after matching, see `run_detected_case`); ``--speed`` times
one round for 200, 500 and 2,000 nodes. ``--thread-pieces L ...`` adds ``threaded_right_L``:
the share of residues HMM threading places right when the reference chains, cut into pieces of
``L`` residues, are threaded with the network's types (`threaded_pieces`: what the types allow a
perfect trace of chains that long).

``--sequence-probe`` (#4: does the jointly trained ESM-2 pass on the sequence's order, or only
its composition?) runs every case three times from the same start, with (i) the ``true``
sequences, (ii) each sequence ``shuffled`` (same composition, order lost) and (iii) a
``composition`` stand-in per sequence (`cryobuild.pipeline.composition_stand_in`, what a
sequence-free build reads: same length, HMMER's background composition, so neither order nor
the protein's own composition is left); one JSON line per case and sequence, then the means
and a table of the residue-type accuracy per sequence.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from pathlib import Path

import numpy as np

from ..checkpoints import checkpoint_path, trained_on
from ..data import default_split, read_structure
from ..features import NetworkMap, standardise
from ..maps import DensityMap, read_map
from ..models import BuiltModel, read_model
from ..points import CalphaPoints
from ..residues import UNK_INDEX
from ..simulate import SimulationOptions, simulate_map

__all__ = [
    "START_NOISE",
    "PROBE_SEQUENCES",
    "BenchCase",
    "chain_error_parts",
    "detected_refinement",
    "folder_case",
    "main",
    "noisy_start",
    "probe_sequences",
    "run_case",
    "score_refinement",
    "simulated_cases",
]

#: Per-axis standard deviation (Å) of the noise added to the reference Cα (METHODS §3).
START_NOISE = 1.0 / math.sqrt(3.0)
#: Signal-to-noise ratio of the simulated benchmark maps (as the detector's validation).
SIMULATED_SNR = 3.0
#: Simulated benchmark structures are taken from this size range (residues).
SIMULATED_SIZE = (80, 400)
_SIDECHAIN_START = 4  # atom14 slot of CB
#: The sequences of ``--sequence-probe`` (see the module docstring).
PROBE_SEQUENCES = ("true", "shuffled", "composition")


@dataclasses.dataclass(frozen=True)
class BenchCase:
    """A map (as the networks see it) with its reference model and sequences."""

    name: str
    view: NetworkMap
    reference: BuiltModel
    sequences: tuple[str, ...]


def noisy_start(reference: BuiltModel, rng: np.random.Generator, noise: float = START_NOISE
                ) -> CalphaPoints:
    """The reference Cα plus N(0, ``noise``) Å per axis (default `START_NOISE`)."""
    xyz = reference.ca + rng.normal(0.0, noise, reference.ca.shape)
    return CalphaPoints(xyz, np.ones(len(xyz)))


def _rmsd(squared: np.ndarray) -> float:
    return float(np.sqrt(squared.mean())) if squared.size else float("nan")


def chain_error_parts(ca: np.ndarray, reference: BuiltModel, residues: np.ndarray | None = None
                      ) -> tuple[float, float]:
    """Rms per axis (Å) of the error of ``ca`` ``[M, 3]``, the positions of reference residues
    ``residues`` ``[M]`` (default: node ``i`` is residue ``i``), along the chain (the unit vector
    from the reference's Cα(i-1) to Cα(i+1)) and across it (the two other axes), over the
    residues whose both neighbours follow in their chain."""
    residues = np.arange(len(ca)) if residues is None else np.asarray(residues)
    follows = reference.follows()
    inner = np.zeros(reference.num_residues, dtype=bool)
    inner[1:-1] = follows[:-1] & follows[1:]
    keep = inner[residues]
    if not keep.any():
        return float("nan"), float("nan")
    index = residues[keep]
    tangent = reference.ca[index + 1] - reference.ca[index - 1]
    tangent /= np.linalg.norm(tangent, axis=-1, keepdims=True)
    error = (ca[keep] - reference.ca[index]).astype(np.float64)
    along = (error * tangent).sum(-1)
    across_sq = np.maximum((error**2).sum(-1) - along**2, 0.0)
    return float(np.sqrt((along**2).mean())), float(np.sqrt(across_sq.mean() / 2))


def score_refinement(output, reference: BuiltModel) -> dict[str, float]:
    """Scores of a `GraphOutput` whose node ``i`` is reference residue ``i`` (see module doc)."""
    predicted_type = output.aa_probs.argmax(-1)
    known = reference.aatype < UNK_INDEX
    ca_error = np.linalg.norm(output.translations - reference.ca, axis=-1)
    backbone = reference.atom_mask[:, :3]
    backbone_sq = ((output.atom14_positions[:, :3] - reference.atom_positions[:, :3]) ** 2).sum(-1)
    right = known & (predicted_type == reference.aatype)
    side = reference.atom_mask & output.atom14_mask & right[:, None]
    side[:, :_SIDECHAIN_START] = False
    side_sq = ((output.atom14_positions - reference.atom_positions) ** 2).sum(-1)
    followed = np.flatnonzero(reference.follows())
    c_to_n = output.atom14_positions[followed, 2] - output.atom14_positions[followed, 0]
    towards_next = reference.ca[followed + 1] - reference.ca[followed]
    along, across = chain_error_parts(output.translations, reference)
    correlation = (
        float(np.corrcoef(output.confidence, ca_error)[0, 1])
        if len(ca_error) > 2 and output.confidence.std() > 0 and ca_error.std() > 0
        else float("nan")
    )
    return {
        "n_residues": int(reference.num_residues),
        "aa_accuracy": float(right.sum() / max(known.sum(), 1)),
        "ca_rmsd": _rmsd(ca_error**2),
        "ca_rms_along": along,
        "ca_rms_across": across,
        "bb_rmsd": _rmsd(backbone_sq[backbone]),
        "confidence_error_corr": correlation,
        "sidechain_rmsd": _rmsd(side_sq[side]),
        "direction_right": float(np.mean((c_to_n * towards_next).sum(-1) > 0)) if len(followed) else float("nan"),
    }


def threaded_pieces(output, case: BenchCase, length: int) -> float:
    """Share of the reference residues of known type that HMM threading puts on their own
    residue type when each reference chain is cut into pieces of ``length`` residues and every
    piece is threaded alone with ``output``'s residue types (`thread.search.thread_chains`;
    node ``i`` is reference residue ``i``). The trace is perfect, so this bounds what the
    types allow a build whose chains are ``length`` residues long."""
    from ..residues import one_letter
    from ..sequences import Sequence
    from ..thread.search import thread_chains

    reference = case.reference
    pieces = []
    for chain in dict.fromkeys(reference.chain_id.tolist()):
        rows = np.flatnonzero(reference.chain_id == chain)
        pieces += [rows[start:start + length] for start in range(0, len(rows), length)]
    sequences = [Sequence(f"s{index}", residues) for index, residues in enumerate(case.sequences)]
    matches = thread_chains(pieces, output.aa_probs, output.confidence, sequences,
                            rng=np.random.default_rng(0))
    right = 0
    for piece, match in zip(pieces, matches):
        if not match.threaded:
            continue
        residues = sequences[match.sequence_index].residues
        for row, number in zip(piece, match.residue_number[:len(piece)]):
            if number > 0 and reference.aatype[row] < UNK_INDEX:
                right += residues[number - 1] == one_letter(reference.aatype[row])
    return right / max(int((reference.aatype < UNK_INDEX).sum()), 1)


def run_case(case: BenchCase, network, *, rounds: int = 3, seed: int = 0, device=None,
             pieces: tuple[int, ...] = (), noise: float = START_NOISE) -> dict:
    """Refine ``case`` from a noisy start and score it (plus ``name`` and ``seconds``, and
    ``threaded_right_L`` = `threaded_pieces` for each length ``L`` of ``pieces``)."""
    from ..gnn.refine import refine

    start = noisy_start(case.reference, np.random.default_rng(seed), noise)
    began = time.time()
    output = refine(case.view, start, list(case.sequences), network, rounds=rounds, device=device)
    seconds = time.time() - began
    threaded = {f"threaded_right_{length}": threaded_pieces(output, case, length)
                for length in pieces}
    return {"name": case.name, **score_refinement(output, case.reference), "seconds": round(seconds, 2),
            **threaded}


def detected_refinement(case: BenchCase, network, detector, *, rounds: int = 3, device=None):
    """The graph network's output (`GraphOutput`, one node per detected Cα) after ``rounds``
    recycling rounds from the Cα the detector finds in the case's map (default threshold), the
    seconds the refinement took, and those Cα (`CalphaPoints`)."""
    from ..detect.inference import detect_calphas
    from ..gnn.refine import refine

    points = detect_calphas(case.view, detector, device=device).points
    began = time.time()
    output = refine(case.view, points, list(case.sequences), network, rounds=rounds, device=device)
    return output, time.time() - began, points


def run_detected_case(case: BenchCase, network, detector, *, rounds: int = 3, device=None) -> dict:
    """Refine from the Cα the detector finds in the case's map; scored after one-to-one
    matching to the reference (`cryobuild.evaluate`): ``aa_accuracy`` is the sequence match of
    matched residues, ``ca_recall`` how many reference residues have a node; ``ca_rms_along`` and
    ``ca_rms_across`` (`chain_error_parts`) of the detector's Cα (``detected_``) and of the
    nodes after the rounds, each paired one to one with the reference (`match_calpha`)."""
    from ..evaluate import evaluate, match_calpha

    output, seconds, points = detected_refinement(case, network, detector, rounds=rounds, device=device)
    metrics = evaluate(output.to_model(), case.reference)
    parts = {}
    for prefix, xyz in (("detected_", points.xyz), ("", output.translations)):
        node, residue = match_calpha(xyz, case.reference.ca)
        parts[prefix + "ca_rms_along"], parts[prefix + "ca_rms_across"] = chain_error_parts(
            xyz[node], case.reference, residue)
    return {"name": case.name, "start": "detected", "n_residues": int(case.reference.num_residues),
            "ca_recall": metrics.ca_recall, "aa_accuracy": metrics.sequence_match,
            "ca_rmsd": metrics.ca_rmsd, "bb_rmsd": metrics.backbone_rmsd, **parts,
            "seconds": round(seconds, 2)}


def probe_sequences(sequences: tuple[str, ...], rng: np.random.Generator) -> dict[str, tuple[str, ...]]:
    """The `PROBE_SEQUENCES` variants of a case's sequences (each sequence on its own;
    ``rng`` shuffles)."""
    from ..pipeline import composition_stand_in

    return {
        "true": tuple(sequences),
        "shuffled": tuple("".join(rng.permutation(list(sequence))) for sequence in sequences),
        "composition": tuple(composition_stand_in(len(sequence)) for sequence in sequences),
    }


def round_seconds(network, sizes=(200, 500, 2000), device=None) -> dict[int, float]:
    """Seconds of one graph-network round for graphs of ``sizes`` nodes (points on a 3.8 Å
    lattice in a noise map; the time does not depend on the content)."""
    from ..gnn.refine import refine

    rng = np.random.default_rng(0)
    out = {}
    for size in sizes:
        edge = int(np.ceil(size ** (1 / 3)))
        lattice = np.stack(np.meshgrid(*[np.arange(edge)] * 3, indexing="ij"), -1).reshape(-1, 3)[:size]
        xyz = 10.0 + 3.8 * lattice + rng.normal(0, 0.3, (size, 3))
        box = int(np.ceil(xyz.max() + 10))
        density = DensityMap(rng.standard_normal((box,) * 3).astype(np.float32), 1.0, np.zeros(3))
        sequence = "".join(rng.choice(list("ACDEFGHIKLMNPQRSTVWY"), size))
        began = time.time()
        refine(standardise(density, 3.0), CalphaPoints(xyz, np.ones(size)), [sequence], network,
               rounds=1, device=device)
        out[size] = round(time.time() - began, 2)
        print(json.dumps({"speed_nodes": size, "seconds_per_round": out[size]}), flush=True)
    return out


def simulated_cases(count: int, resolution: float, seed: int = 0) -> list[BenchCase]:
    """``count`` validation-split structures of `SIMULATED_SIZE` residues (a fixed choice),
    with maps simulated at ``resolution`` Å (1 Å voxels, SNR `SIMULATED_SNR`)."""
    rng = np.random.default_rng(seed)
    records = [r for r in default_split()["validation"]
               if SIMULATED_SIZE[0] <= r.num_residues <= SIMULATED_SIZE[1]]
    cases = []
    for record in records[:: max(len(records) // max(count, 1), 1)][:count]:
        density = simulate_map(
            read_structure(record.path),
            SimulationOptions(resolution=resolution, snr=SIMULATED_SNR),
            rng,
        )
        cases.append(
            BenchCase(record.path.stem, standardise(density, resolution), read_model(record.path),
                      tuple(dict.fromkeys(record.sequences)))
        )
    return cases


def folder_case(folder: Path, resolution: float | None = None) -> BenchCase:
    """A case folder (``case.json``, its map, ``ref.cif``, optional ``seq.fasta``), its map
    read at ``resolution`` Å (default: the one ``case.json`` states)."""
    from ..sequences import read_fasta

    info = json.loads((folder / "case.json").read_text())
    reference = read_model(folder / "ref.cif")
    fasta = folder / "seq.fasta"
    if fasta.is_file():
        sequences = tuple(s.residues for s in read_fasta(fasta))
    else:
        sequences = tuple(dict.fromkeys(reference.entity_sequences.values()))
    view = standardise(read_map(folder / info["map"]), resolution or info.get("resolution"))
    return BenchCase(folder.name, view, reference, sequences)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("cases", nargs="*", type=Path, help="case folders")
    parser.add_argument("--checkpoint", type=Path, default=None, help="default: weights/gnn.pt")
    parser.add_argument("--simulated", type=int, default=0, help="held-out simulated cases")
    parser.add_argument("--resolution", type=float, default=3.0, help="of simulated maps, Å")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default=None)
    parser.add_argument("--start", choices=["noisy", "detected"], default="noisy",
                        help="reference Cα + noise (default) or the detector's Cα")
    parser.add_argument("--start-noise", type=float, default=START_NOISE * math.sqrt(3.0), metavar="Å",
                        help="rms error (Å) of the noisy start's Cα (default 1)")
    parser.add_argument("--speed", action="store_true",
                        help="also time one round for 200, 500 and 2,000 nodes")
    parser.add_argument("--thread-pieces", type=int, nargs="*", default=(), metavar="L",
                        help="also thread the reference chains cut into pieces of L residues "
                             "with the network's types (a perfect trace; noisy starts only)")
    parser.add_argument("--sequence-probe", action="store_true",
                        help="run each case with the true, shuffled and composition stand-in sequences")
    args = parser.parse_args(argv)
    from ..gnn.refine import load_gnn

    network = load_gnn(args.checkpoint, args.device)
    if args.speed:
        round_seconds(network, device=args.device)
    cases = [folder_case(folder) for folder in args.cases]
    cases += simulated_cases(args.simulated, args.resolution, args.seed)
    if not cases:
        if args.speed:
            return
        parser.error("give case folders and/or --simulated N")
    detector = None
    if args.start == "detected":
        from ..detect.network import load_detector

        detector = load_detector(device=args.device)
    # a figure for a map the networks trained on is no figure: such rows are flagged and left
    # out of the means
    seen = trained_on(args.checkpoint or checkpoint_path("gnn"),
                      *([checkpoint_path("detect")] if detector is not None else []))
    rng = np.random.default_rng(args.seed)
    results = []
    for case in cases:
        variants = probe_sequences(case.sequences, rng) if args.sequence_probe else {"true": case.sequences}
        for label, sequences in variants.items():
            probed = dataclasses.replace(case, sequences=sequences)
            if detector is not None:
                result = run_detected_case(probed, network, detector, rounds=args.rounds, device=args.device)
            else:
                result = run_case(probed, network, rounds=args.rounds, seed=args.seed,
                                  device=args.device, pieces=tuple(args.thread_pieces),
                                  noise=args.start_noise / math.sqrt(3.0))
            if args.sequence_probe:
                result = {"sequence": label, **result}
            result["seen"] = case.name in seen
            results.append(result)
            print(json.dumps(result), flush=True)
    numeric = [key for key, value in results[0].items()
               if isinstance(value, (int, float)) and not isinstance(value, bool)]
    if any(r["seen"] for r in results):
        print("left out of the means, the networks trained on them: "
              + ", ".join(sorted({r["name"] for r in results if r["seen"]})), flush=True)
        results = [r for r in results if not r["seen"]]
        if not results:
            return
    labels = PROBE_SEQUENCES if args.sequence_probe else ("true",)
    accuracy = {}
    for label in labels:
        rows = [r for r in results if r.get("sequence", "true") == label]
        means = {key: float(np.nanmean([r[key] for r in rows])) for key in numeric}
        accuracy[label] = means["aa_accuracy"]
        tag = {"sequence": label} if args.sequence_probe else {}
        print(json.dumps({"name": "mean", **tag, "cases": len(rows), **means}), flush=True)
    if args.sequence_probe:
        print("\n| sequence | residue-type accuracy |\n|---|---|")
        for label, value in accuracy.items():
            print(f"| {label} | {value:.3f} |")


if __name__ == "__main__":
    main()
