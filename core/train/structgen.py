"""Train the Structure Generator on simulated inputs: ``python -m cryobuild.train.structgen``.

Resumable: every run starts from ``--checkpoint`` (default ``weights/structgen.pt``) when it
exists and saves back to it every ``--save-every`` steps and at the end, so training can continue
over many sessions. Progress goes to ``--log`` as JSON lines: the run's settings when it starts,
loss and accuracy every ``--log-every`` steps, validation accuracies every ``--validate-every``.

Each step is one chain of a training-split structure (Li et al. 2021, §III-B/C, METHODS §6): its
true Cα contact map, simulated residue-type scores, dummy nodes up to 500, nodes shuffled, chains
longer than ``--max-length`` cropped to a window (`cryobuild.structgen.samples.make_sample`);
batch size 1, Adam, loss eq. 1, one reading direction per step (drawn at random for a network
with ``direction="both"``). The learning rate drops tenfold after ``--lr-drop-step`` steps
(paper: 1e-3, then 1e-4 after 100,000).

The paper's recipe (peaked scores, true contact maps) is the default:

    python -m cryobuild.train.structgen --layers 2 --minutes 240

Inputs like a build's (a stand-in for the graph network's residue-type probabilities on
detected Cα): soft scores (``--score-margin``), Cα error (``--ca-noise``), missing Cα
(``--missing-fraction``) and false detections beside the chain (``--decoy-fraction``), with a
contact cutoff that survives the Cα error:

    python -m cryobuild.train.structgen --contact-distance 4.5 --score-margin 1 5 \\
        --ca-noise 0.3 --missing-fraction 0.05 --decoy-fraction 0.2 --checkpoint runs/structgen_soft.pt

``--layers``, ``--direction`` and ``--contact-distance`` shape a new network; on resume they
must match the checkpoint. Table I's other depths (T = 0: no GCN layer, the nodes' own scores
only; T = 1; T = 3) are one network each, in its own checkpoint and log:

    python -m cryobuild.train.structgen --layers 0 --checkpoint weights/structgen_t0.pt \\
        --steps 4000 --lr-drop-step 3000 --log runs/structgen_t0/log.jsonl

A build's own inputs (``--detected-fraction``): that fraction of the steps takes a chain of a
training-split structure as a build hands it to the threader: its map simulated at 2.8-4.5 Å,
the Cα the detector finds, refined by the graph network for 1-3 rounds (its residue-type
probabilities are the scores), every node of the map in the graph, each reference residue's
node paired within 3 Å (`cryobuild.bench.structgen.detected_samples`). ``--detected-structures``
of them are made once, at the start, and cached beside the checkpoint:

    cp weights/structgen_soft.pt runs/structgen_built.pt
    python -m cryobuild.train.structgen --checkpoint runs/structgen_built.pt --detected-fraction 0.5 \
        --detected-structures 120 --score-margin 1 5 --ca-noise 0.3 --missing-fraction 0.05 \
        --decoy-fraction 0.2 --lr 1e-4

``--type-log-odds`` gives a new network `StructGenConfig.type_log_odds` (the nodes' own log
scores of each position's type added to its logits); resuming a checkpoint without them adds
them at weight 1 with the network's weights kept (`with_type_log_odds`; the optimizer starts
afresh).

Validation: `cryobuild.bench.structgen` on ``--validation-chains`` held-out chains with the
run's score noise.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import pickle
import time
from pathlib import Path

import numpy as np
import torch

from ..bench.structgen import (benchmark, build_nodes, detected_samples, paper_samples,
                               validation_chains)
from ..checkpoints import checkpoint_path, load_checkpoint
from ..data import default_split
from ..errors import InputError
from ..structgen.model import (
    DIRECTIONS,
    StructGenConfig,
    StructureGenerator,
    config_from_dict,
    threading_loss,
)
from ..structgen.samples import SampleOptions, ScoreNoise, make_sample, read_chains
from ..thread.structgen import ThreadOptions
from .loop import TrainingRun, random_files

__all__ = ["DETECTED_RESOLUTIONS", "LR_DROP", "MIN_TRAIN_LENGTH", "built_samples", "main"]

#: Shortest training chain (residues).
MIN_TRAIN_LENGTH = 20
#: Factor applied to the learning rate after ``--lr-drop-step`` steps (paper: 1e-3 -> 1e-4).
LR_DROP = 0.1
#: Gradient-norm clip (the summed loss grows with the sequence length).
GRADIENT_CLIP = 10.0
#: Å: range of the resolutions of the ``--detected-fraction`` samples' simulated maps.
DETECTED_RESOLUTIONS = (2.8, 4.5)
#: Graph-network rounds before a ``--detected-fraction`` sample's types are read (a build
#: threads after each of its 3 rounds; the first round's types are the least sure).
DETECTED_ROUNDS = (1, 3)
#: ``--built-realism``: log-uniform SNR range and noise colour range (`SimulationOptions`) of
#: the built maps, which also get `cryobuild.train.realism`'s blemishes and element weights
#: (the graph network's own training randomisations), for types as flat as maps unlike our
#: simulator give.
BUILT_LOG_SNR = (math.log(1.0), math.log(4.0))
BUILT_NOISE_COLOUR = (0.0, 1.0)


def built_samples(count: int, contact_distance: float, cache: Path, seed: int,
                  realism: bool = False) -> list:
    """`ThreadingSample` objects of ``count`` training-split structures as a build hands them to
    the threader (module docstring), read from ``cache`` when it exists, else made (with the
    bundled detector and graph network) and saved there; with ``realism``, the maps vary as in
    `BUILT_LOG_SNR` and `BUILT_NOISE_COLOUR`."""
    if cache.exists():
        with open(cache, "rb") as handle:
            return pickle.load(handle)
    from ..bench.gnn import SIMULATED_SIZE, SIMULATED_SNR, BenchCase
    from ..data import read_structure
    from ..detect.network import load_detector
    from ..features import standardise
    from ..gnn.refine import load_gnn
    from ..models import read_model
    from ..simulate import SimulationOptions, simulate_map
    from .realism import Realism, degrade_map, perturb_atoms

    rng = np.random.default_rng([seed, 1])
    records = [r for r in default_split()["train"]
               if SIMULATED_SIZE[0] <= r.num_residues <= SIMULATED_SIZE[1]]
    gnn, detector = load_gnn(None), load_detector(None)
    samples = []
    for index in rng.permutation(len(records))[:count]:
        record = records[index]
        resolution = float(rng.uniform(*DETECTED_RESOLUTIONS))
        structure = read_structure(record.path)
        if realism:
            blemishes = Realism(element_weight_fraction=0.5)
            perturb_atoms(structure, blemishes, rng)
            options = SimulationOptions(resolution=resolution,
                                        snr=math.exp(rng.uniform(*BUILT_LOG_SNR)),
                                        noise_colour=float(rng.uniform(*BUILT_NOISE_COLOUR)))
            density = simulate_map(structure, options, rng)
            atoms = np.array([a.pos.tolist() for ch in structure[0] for r in ch for a in r])
            density = degrade_map(density, atoms, blemishes, rng)
        else:
            density = simulate_map(structure, SimulationOptions(resolution=resolution,
                                                                snr=SIMULATED_SNR), rng)
        case = BenchCase(record.path.stem, standardise(density, resolution), read_model(record.path),
                         tuple(dict.fromkeys(record.sequences)))
        rounds = int(rng.integers(DETECTED_ROUNDS[0], DETECTED_ROUNDS[1] + 1))
        samples.extend(detected_samples([build_nodes(case, gnn, detector, rounds=rounds)],
                                        contact_distance))
        print(f"built samples: {record.path.stem} at {resolution:.1f} Å, {rounds} rounds "
              f"({len(samples)} chains)", flush=True)
    cache.parent.mkdir(parents=True, exist_ok=True)
    partial = cache.with_suffix(".partial")
    with open(partial, "wb") as handle:
        pickle.dump(samples, handle)
    partial.replace(cache)
    return samples


def _network_config(state: dict | None, changes: dict) -> StructGenConfig:
    """The checkpoint's config (the given ``changes``, config field -> value or None, must
    agree with it) or a new config with them."""
    changes = {name: value for name, value in changes.items() if value is not None}
    if state is None:
        return StructGenConfig(**changes)
    config = config_from_dict(state["config"])
    for name, wanted in changes.items():
        if getattr(config, name) != wanted:
            raise SystemExit(f"the checkpoint has {name}={getattr(config, name)!r}, not {wanted!r}; "
                             "pass another --checkpoint to train a new network")
    return config


def with_type_log_odds(state: dict) -> dict:
    """A checkpoint of a network without `StructGenConfig.type_log_odds` as one with it: the
    same weights, ``type_weight`` at its initial 1 and no optimizer state (the parameters
    changed), so that training resumes from what the network already learned."""
    config = {**state["config"], "type_log_odds": True}
    model = {**state["model"], "type_weight": torch.ones(())}
    return {**{k: v for k, v in state.items() if k != "optimizer"}, "config": config, "model": model}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, default=None, help="default: weights/structgen.pt")
    parser.add_argument("--layers", type=int, default=None, help="GCN layers T of a new network (default 2)")
    parser.add_argument("--direction", choices=DIRECTIONS + ("both",), default=None,
                        help="reading directions of a new network (default both)")
    parser.add_argument("--contact-distance", type=float, default=None,
                        help="edge cutoff (Å) of a new network (default 4.0)")
    parser.add_argument("--type-log-odds", action="store_true", default=None,
                        help="add the nodes' own log scores of each position's type to the "
                             "network's logits (StructGenConfig.type_log_odds); resuming a "
                             "checkpoint without them adds them")
    parser.add_argument("--minutes", type=float, default=60.0, help="wall-time budget")
    parser.add_argument("--steps", type=int, default=None, help="stop after this many steps in total")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--lr-drop-step", type=int, default=100_000)
    parser.add_argument("--score-sigma", type=float, default=ScoreNoise().sigma,
                        help="standard deviation of the wrong types' simulated scores")
    parser.add_argument("--wrong-fraction", type=float, default=ScoreNoise().wrong_fraction,
                        help="fraction of nodes scored as a wrong type")
    parser.add_argument("--score-margin", type=float, nargs=2, default=None, metavar=("LOW", "HIGH"),
                        help="soft scores: range of the true type's logit margin (samples.ScoreNoise)")
    parser.add_argument("--ca-noise", type=float, default=0.0, help="Å per axis on the true Cα")
    parser.add_argument("--missing-fraction", type=float, default=0.0,
                        help="fraction of residues whose Cα is unknown (node without edges)")
    parser.add_argument("--decoy-fraction", type=float, default=0.0,
                        help="decoy nodes 2-4 Å from the chain's Cα per real node (false detections)")
    parser.add_argument("--detected-fraction", type=float, default=0.0,
                        help="fraction of steps on a build's own inputs (module docstring)")
    parser.add_argument("--detected-structures", type=int, default=120,
                        help="training structures built for --detected-fraction")
    parser.add_argument("--built-realism", action="store_true",
                        help="the built maps vary in noise and get the graph network's "
                             "training blemishes (BUILT_LOG_SNR, BUILT_NOISE_COLOUR)")
    parser.add_argument("--num-nodes", type=int, default=SampleOptions().num_nodes)
    parser.add_argument("--max-length", type=int, default=SampleOptions().max_length,
                        help="longest window of sequence positions per step")
    parser.add_argument("--save-every", type=int, default=200)
    parser.add_argument("--log-every", type=int, default=50)
    parser.add_argument("--validate-every", type=int, default=1000, help="0: never")
    parser.add_argument("--validation-chains", type=int, default=20)
    parser.add_argument("--log", type=Path, default=Path("runs/structgen/log.jsonl"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.checkpoint is None:
        args.checkpoint = checkpoint_path("structgen")

    state = load_checkpoint(args.checkpoint) if args.checkpoint.exists() else None
    if state is not None and args.type_log_odds and not state["config"].get("type_log_odds"):
        state = with_type_log_odds(state)
    config = _network_config(state, {"gcn_layers": args.layers, "direction": args.direction,
                                     "contact_distance": args.contact_distance,
                                     "type_log_odds": args.type_log_odds})
    network = StructureGenerator(config)
    optimizer = torch.optim.Adam(network.parameters(), lr=args.lr)
    options = SampleOptions(
        num_nodes=args.num_nodes,
        max_length=args.max_length,
        ca_noise=args.ca_noise,
        missing_fraction=args.missing_fraction,
        decoy_fraction=args.decoy_fraction,
        noise=ScoreNoise(args.score_sigma, args.wrong_fraction,
                         tuple(args.score_margin) if args.score_margin else None),
    )
    run = TrainingRun(args.checkpoint, args.log, network, optimizer, dataclasses.asdict(config),
                      extra={"sample_options": dataclasses.asdict(options)})
    run.resume(state)

    records = default_split()["train"]
    validation = (
        paper_samples(validation_chains(args.validation_chains), options, config.contact_distance, args.seed)
        if args.validate_every else []
    )
    rng = np.random.default_rng([args.seed, run.step])
    built = (built_samples(args.detected_structures, config.contact_distance,
                           args.checkpoint.with_suffix(".built.pkl"), args.seed,
                           args.built_realism)
             if args.detected_fraction > 0 else [])

    run.log({"step": run.step, "run": {"checkpoint": str(args.checkpoint), "config": run.config,
                                       "sample_options": run.extra["sample_options"], "lr": args.lr,
                                       "detected_fraction": args.detected_fraction,
                                       "built_realism": args.built_realism,
                                       "built_chains": len(built)}})
    running: dict[str, list[float]] = {}
    run.start()
    for _, chains in random_files(records, lambda path: read_chains(path, MIN_TRAIN_LENGTH), rng, InputError):
        if not chains:
            continue
        began = time.time()
        if built and rng.random() < args.detected_fraction:
            sample = built[int(rng.integers(len(built)))]
        else:
            sample = make_sample(chains[int(rng.integers(len(chains)))], options, rng,
                                 config.contact_distance)
        direction = DIRECTIONS[int(rng.integers(2))] if config.direction == "both" else config.direction
        run.set_lr(args.lr * (LR_DROP if run.step >= args.lr_drop_step else 1.0))
        loss, parts = threading_loss(network, sample, direction)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(network.parameters(), GRADIENT_CLIP)
        optimizer.step()
        now = run.tick()
        for name, value in {**parts, "positions": float(len(sample.sequence)), "step_seconds": now - began}.items():
            running.setdefault(name, []).append(value)
        if run.step % args.log_every == 0:
            run.log({"step": run.step, **{k: round(float(np.mean(v)), 4) for k, v in running.items()},
                     "lr": optimizer.param_groups[0]["lr"], "wall": round(run.wall_seconds)})
            running = {}
        if validation and run.step % args.validate_every == 0:
            run.add_validation("validation", benchmark(network, validation, ThreadOptions()))
        if run.end_step(args.save_every, args.minutes, args.steps):
            break
    run.finish()


if __name__ == "__main__":
    main()
