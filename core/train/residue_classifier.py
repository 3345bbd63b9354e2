"""Train the residue classifier (`cryobuild.residue_classifier`): ``python -m
cryobuild.train.residue_classifier --real-fold B``.

The crops are the graph network's (`cryobuild.train.gnn.TrainingGraphs`: training-split
structures in maps simulated with the realism randomisation, and with probability
``--real-fraction`` crops of the fold's real maps with their deposited models), without fake
nodes. Every residue of a crop with N, CA and C is one example: its deposited backbone frame,
moved by `FRAME_TRANSLATION` Å per axis and turned by `FRAME_ANGLE` about a random axis, as
far as the graph network's backbone is from the deposited one on real maps (Cα RMSD 0.66 Å,
backbone 0.91 Å on the dev maps, weights/MANIFEST.md), and its deposited type as the target
(cross-entropy). Resumable from ``--checkpoint`` like the other training scripts
(`cryobuild.train.loop.TrainingRun`).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import time
from pathlib import Path

import numpy as np
import torch

from ..checkpoints import checkpoint_path, load_checkpoint
from ..data import default_split, fold_cases
from ..geometry import Rigid, rotation_from_quaternion
from ..gnn.density import DensityVolume
from ..residue_classifier import ClassifierConfig, ResidueClassifier, config_from_dict
from ..residues import UNK_INDEX
from .gnn import GraphAugmentation, GraphSample, TrainingGraphs
from .loop import TrainingRun, add_real_fold_args, add_session_args

__all__ = ["FRAME_ANGLE", "FRAME_TRANSLATION", "examples", "main"]

#: Per-axis standard deviation (Å) of the shift of a training frame.
FRAME_TRANSLATION = 0.4
#: Standard deviation (radians) of the turn of a training frame (10°).
FRAME_ANGLE = math.radians(10.0)


def _turns(count: int, generator: torch.Generator) -> torch.Tensor:
    """Rotations ``[count, 3, 3]`` by N(0, `FRAME_ANGLE`) about uniformly random axes."""
    axis = torch.randn(count, 3, generator=generator)
    axis = axis / axis.norm(dim=-1, keepdim=True)
    half = 0.5 * FRAME_ANGLE * torch.randn(count, 1, generator=generator)
    return rotation_from_quaternion(torch.cat([torch.cos(half), torch.sin(half) * axis], dim=-1))


def examples(sample: GraphSample, classifier: ResidueClassifier, generator: torch.Generator
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """Cubes ``[E, 1, S, S, S]`` and target types ``[E]`` of the residues of ``sample`` that
    have a known type and N, CA and C, in jittered deposited frames."""
    usable = sample.real & sample.atom14_mask[:, :3].all(-1) & (sample.aatype < UNK_INDEX)
    backbone = torch.from_numpy(sample.atom14[usable][:, :3])
    frames = Rigid.from_3_points(backbone[:, 0], backbone[:, 1], backbone[:, 2])
    count = len(backbone)
    frames = Rigid(frames.rotations @ _turns(count, generator),
                   frames.translations + FRAME_TRANSLATION * torch.randn(count, 3, generator=generator))
    volume = DensityVolume.from_map(sample.density)
    with torch.no_grad():
        cubes = classifier.sample_cubes(volume, frames)
    return cubes, torch.from_numpy(sample.aatype[usable])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, default=None, help="default: weights/classifier.pt")
    add_session_args(parser, minutes=30.0, lr=1e-3, log="runs/classifier/log.jsonl")
    parser.add_argument("--crops-per-structure", type=int, default=4)
    add_real_fold_args(parser, real_fraction=0.5)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.checkpoint is None:
        args.checkpoint = checkpoint_path("classifier")

    state = load_checkpoint(args.checkpoint) if args.checkpoint.exists() else None
    config = config_from_dict(state["config"]) if state else ClassifierConfig()
    classifier = ResidueClassifier(config)
    optimizer = torch.optim.AdamW(classifier.parameters(), lr=args.lr, weight_decay=1e-4)
    real_cases = fold_cases(args.real_fold) if args.real_fold else []
    run = TrainingRun(args.checkpoint, args.log, classifier, optimizer, dataclasses.asdict(config),
                      extra={"real_maps": sorted(c.name for c in real_cases)})
    run.resume(state)
    run.set_lr(args.lr)

    augmentation = GraphAugmentation(real_fraction=args.real_fraction if real_cases else 0.0,
                                     fake_fraction=0.0, sidechain_decoys=(0.0, 0.0))
    dataset = TrainingGraphs(default_split()["train"], augmentation, args.crops_per_structure,
                             seed=args.seed + run.step, real_cases=real_cases)
    loader = torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=1, prefetch_factor=4)
    generator = torch.Generator().manual_seed(args.seed + run.step)
    running: dict[str, list[float]] = {}
    run.start()
    for sample in loader:
        began = time.time()
        run.anneal_lr(args.lr, args.final_lr, args.minutes)
        cubes, targets = examples(sample, classifier, generator)
        if not len(targets):
            continue
        logits = classifier(cubes)
        loss = torch.nn.functional.cross_entropy(logits, targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        run.tick()
        accuracy = float((logits.argmax(-1) == targets).float().mean())
        # real crops are cut from a deposited map, simulated ones are simulated: the log keeps
        # them apart, since only the real maps say what the classifier learned of cryo-EM
        kind = "real" if sample.from_real_map else "simulated"
        for name, value in {f"loss_{kind}": loss.item(), f"accuracy_{kind}": accuracy,
                            "seconds": time.time() - began}.items():
            running.setdefault(name, []).append(value)
        if run.step % args.log_every == 0:
            run.log({"step": run.step, **{k: round(float(np.mean(v)), 4) for k, v in running.items()},
                     "lr": float(f"{optimizer.param_groups[0]['lr']:.3g}"), "wall": round(run.wall_seconds)})
            running = {}
        if run.end_step(args.save_every, args.minutes, args.steps):
            break
    run.finish()


if __name__ == "__main__":
    main()
