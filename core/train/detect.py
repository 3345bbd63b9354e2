"""Train the Cα detector on simulated maps: ``python -m cryobuild.train.detect``.

Resumable: every run starts from ``--checkpoint`` (default: the committed ``weights/detect.pt``)
when it exists, and saves back to it every ``--save-every`` steps and at the end, so training
can go on over many sessions in the background (``nohup python -m cryobuild.train.detect
--minutes 60 &``). Progress goes to ``--log`` as JSON lines.

Each sample is a structure from the training split (by sequence, see `cryobuild.data`) with
random augmentations: residues deleted in stretches (missing density: those Cα are not targets)
or at half occupancy, resolution 2.0-4.5 Å, a random simulation voxel size before resampling to
1.5 Å, global B sharpen/blur in [-30, 30] Å², solvent level, coloured noise at a random SNR,
random box margin (so the solvent fraction, and with it the z-score, varies), a random proper
90° rotation of each crop, and some crops centred on deleted stretches (empty density). With
``--real-fold``, a share of the maps are that fold's real maps (deposited Cα as targets); with
``--noise-fraction``, a share are maps of smoothed Gaussian noise with no targets, so that a
detector fine-tuned on real maps keeps finding nothing in noise.

Loss: penalty-reduced focal loss on a heat map (CornerNet/CenterNet style: the voxel holding a
Cα is positive; negatives near a Cα are down-weighted by (1 - Gaussian)^4), normalised by the
number of Cα, which balances the two classes; plus an L1 loss on the sub-voxel offset at the
positive voxels.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from pathlib import Path

import numpy as np
import torch

from ..checkpoints import checkpoint_path, load_checkpoint
from ..data import ca_coordinates, default_split, fold_cases, read_structure
from ..detect.inference import detection_features, detection_grid
from ..features import standardise
from ..detect.network import CalphaDetector, DetectorConfig
from ..simulate import SimulationOptions, noise_map, simulate_map
from .loop import TrainingRun, add_noise_colour_arg, add_real_fold_args, random_files, worker_rng
from .realism import Realism, degrade_map, perturb_atoms

#: Heat-map Gaussian sigma (voxels) for the negative-weight term of the focal loss. 1.0 (steps
#: 0-2,000) let peaks settle a voxel off (median error ~1 Å): a neighbour of the Cα voxel kept
#: only 2% of a negative's weight; at 0.6 it keeps 32%.
HEATMAP_SIGMA = 0.6
FOCAL_ALPHA = 2
FOCAL_BETA = 4
OFFSET_LOSS_WEIGHT = 1.0


@dataclasses.dataclass(frozen=True)
class Augmentation:
    """Ranges of the random augmentations (resolution Å, voxel size Å, B Å², SNR, ...;
    ``stated_resolution``: the resolution `standardise` is told, as a factor of the true one,
    since a map's stated resolution is only roughly what it holds)."""

    resolution: tuple[float, float] = (2.0, 5.0)
    sim_voxel: tuple[float, float] = (0.8, 1.4)
    b_extra: tuple[float, float] = (-100.0, 150.0)
    stated_resolution: tuple[float, float] = (0.85, 1.2)
    log_snr: tuple[float, float] = (math.log(0.4), math.log(8.0))
    #: `SimulationOptions.noise_colour` range. (1, 1), noise shaped like the signal, is what the
    #: bundled detectors trained on. White noise low-passed (the second recipe, `bench.molmap`,
    #: SNR 1.5) holds more of its power in the shells that place a Cα: on 4 held-out structures
    #: at 3 Å their candidates lay a median 1.04 Å off against 0.90 Å noise-free (`bench.detect
    #: --recipe molmap [--snr 0]`), and the builds threaded 0.31 of the sequence, 0.48 when the
    #: same detector read the noise-free map instead (a scratch oracle, twenty-seventh stop;
    #: docs/results_log.md). Trained 45 min with
    #: (0, 1) (`detect_B27`, weights/MANIFEST.md), the fold-B detector covered more of those
    #: maps' residues but placed none nearer, and the builds moved within their scatter: the
    #: default stays.
    noise_colour: tuple[float, float] = (1.0, 1.0)
    noise_free_fraction: float = 0.1
    solvent_level: tuple[float, float] = (0.0, 0.3)
    margin: tuple[float, float] = (4.0, 20.0)
    deleted_fraction: tuple[float, float] = (0.0, 0.15)
    half_occupancy_fraction: tuple[float, float] = (0.0, 0.1)
    empty_crop_fraction: float = 0.08
    #: maps of noise alone (Gaussian white noise smoothed by ``noise_smoothing`` voxels, at a
    #: voxel of ``noise_voxel`` Å, standardised as if at ``resolution``), which have no Cα: a
    #: detector fine-tuned on real maps without them traced chains through pure noise (step
    #: 10,138 of the fold-B run, weights/MANIFEST.md)
    noise_map_fraction: float = 0.0
    noise_smoothing: tuple[float, float] = (0.0, 2.5)
    noise_voxel: tuple[float, float] = (0.9, 1.6)
    noise_edge: tuple[int, int] = (40, 72)


def _stretch_mask(n: int, fraction: float, rng) -> np.ndarray:
    """Boolean ``[n]``: about ``fraction`` of positions, in stretches of 3-15."""
    mask = np.zeros(n, dtype=bool)
    while n and mask.mean() < fraction:
        length = int(rng.integers(3, 16))
        start = int(rng.integers(0, max(n - length, 1)))
        mask[start : start + length] = True
    return mask


def _augment_structure(structure, aug: Augmentation, rng):
    """Delete residue stretches and halve occupancy of others. Returns (structure, kept Cα
    ``[N, 3]``, deleted Cα ``[M, 3]``)."""
    st = structure.clone()
    st.remove_ligands_and_waters()
    st.remove_hydrogens()
    kept, deleted = [], []
    for chain in st[0]:
        residues = [r for r in chain if r.find_atom("CA", "*") is not None]
        n = len(residues)
        remove = _stretch_mask(n, rng.uniform(*aug.deleted_fraction), rng)
        half = _stretch_mask(n, rng.uniform(*aug.half_occupancy_fraction), rng) & ~remove
        for residue, gone, weak in zip(residues, remove, half):
            ca = residue.find_atom("CA", "*").pos.tolist()
            (deleted if gone else kept).append(ca)
            for atom in residue:
                if gone:
                    atom.occ = 0.0
                elif weak:
                    atom.occ = 0.5
    # occupancy 0 atoms still count in gemmi's density: remove them
    for chain in st[0]:
        for residue in chain:
            for index in range(len(residue) - 1, -1, -1):
                if residue[index].occ == 0:
                    del residue[index]
    return st, np.array(kept).reshape(-1, 3), np.array(deleted).reshape(-1, 3)


def _random_rotation(rng) -> tuple[tuple[int, int, int], tuple[bool, bool, bool]]:
    """A proper 90° rotation as (axis permutation, flips) of a [Z, Y, X] array."""
    while True:
        perm = tuple(int(i) for i in rng.permutation(3))
        flips = tuple(bool(f) for f in rng.integers(0, 2, 3))
        parity = sum(1 for i in range(3) for j in range(i + 1, 3) if perm[i] > perm[j]) % 2
        if (parity + sum(flips)) % 2 == 0:
            return perm, flips


def make_targets(centres_zyx: np.ndarray, size: int) -> tuple[np.ndarray, ...]:
    """Targets for Cα at continuous voxel positions ``[N, 3]`` (z, y, x) in a crop of size³:
    heat map ``[S, S, S]`` (1 at each Cα's voxel, a Gaussian around it), positive mask
    ``[S, S, S]``, offset target ``[3, S, S, S]`` (x, y, z voxels) and its mask ``[S, S, S]``.

    Offsets are trained on the 3x3x3 neighbourhood of each Cα's voxel (the nearest Cα wins), so
    whichever voxel of it peaks at inference points to the atom."""
    heat = np.zeros((size,) * 3, dtype=np.float32)
    positive = np.zeros((size,) * 3, dtype=bool)
    offsets = np.zeros((3,) + (size,) * 3, dtype=np.float32)
    offset_mask = np.zeros((size,) * 3, dtype=bool)
    nearest = np.full((size,) * 3, np.inf, dtype=np.float32)
    radius = int(math.ceil(3 * HEATMAP_SIGMA))
    grid = np.arange(-radius, radius + 1)
    dz, dy, dx = np.meshgrid(grid, grid, grid, indexing="ij")
    neighbourhood = np.stack(np.meshgrid([-1, 0, 1], [-1, 0, 1], [-1, 0, 1], indexing="ij"), -1).reshape(-1, 3)
    for centre in centres_zyx:
        voxel = np.round(centre).astype(int)
        if np.any(voxel < 0) or np.any(voxel >= size):
            continue
        sub = centre - voxel
        gauss = np.exp(-((dz - sub[0]) ** 2 + (dy - sub[1]) ** 2 + (dx - sub[2]) ** 2) / (2 * HEATMAP_SIGMA**2))
        lo = voxel - radius
        sl_dst = tuple(slice(max(l, 0), min(l + 2 * radius + 1, size)) for l in lo)
        sl_src = tuple(slice(d.start - l, d.stop - l) for d, l in zip(sl_dst, lo))
        heat[sl_dst] = np.maximum(heat[sl_dst], gauss[sl_src])
        z, y, x = voxel
        heat[z, y, x] = 1.0
        positive[z, y, x] = True
        for near in voxel + neighbourhood:
            if np.any(near < 0) or np.any(near >= size):
                continue
            shift = centre - near
            distance = float(np.abs(shift).sum())
            k, j, i = near
            if distance < nearest[k, j, i]:
                nearest[k, j, i] = distance
                offsets[:, k, j, i] = shift[::-1]
                offset_mask[k, j, i] = True
    return heat, positive, offsets, offset_mask


class TrainingCrops(torch.utils.data.IterableDataset):
    """Endless ``(features [2,S,S,S], *make_targets(...))`` training crops: of maps simulated
    from training-split structures (with `realism` blemishes), and with probability
    ``real_fraction`` of one of the real maps ``real_cases`` (deposited Cα as targets); maps
    smaller than a crop are framed as ``solvent_frame`` says (`DetectorConfig.solvent_frame`)."""

    def __init__(self, records, crop: int, crops_per_map: int, aug: Augmentation, seed: int,
                 realism: Realism = Realism(), real_cases=(), real_fraction: float = 0.0,
                 solvent_frame: bool = False):
        self.records = list(records)
        self.crop = crop
        self.solvent_frame = solvent_frame
        self.crops_per_map = crops_per_map
        self.aug = aug
        self.seed = seed
        self.realism = realism
        self.real_cases = list(real_cases)
        self.real_fraction = real_fraction if self.real_cases else 0.0

    def __iter__(self):
        rng = worker_rng(self.seed)
        real_views = {}
        for _, structure in random_files(self.records, read_structure, rng):
            if rng.random() < self.aug.noise_map_fraction:
                yield from self._noise(rng)
            elif rng.random() < self.real_fraction:
                case = self.real_cases[int(rng.integers(len(self.real_cases)))]
                if case.name not in real_views:
                    real_views[case.name] = _real_view(case)
                view, ca = real_views[case.name]
                yield from self._crops(view, ca, np.zeros((0, 3)), rng)
            else:
                yield from self._simulated(structure, rng)

    def _simulated(self, structure, rng):
        aug = self.aug
        st, kept, deleted = _augment_structure(structure, aug, rng)
        if len(kept) < 10:
            return
        perturb_atoms(st, self.realism, rng)
        snr = None if rng.random() < aug.noise_free_fraction else math.exp(rng.uniform(*aug.log_snr))
        resolution = float(rng.uniform(*aug.resolution))
        options = SimulationOptions(
            resolution=resolution,
            voxel_size=rng.uniform(*aug.sim_voxel),
            margin=rng.uniform(*aug.margin),
            b_extra=rng.uniform(*aug.b_extra),
            snr=snr,
            solvent_level=rng.uniform(*aug.solvent_level),
            noise_colour=float(rng.uniform(*aug.noise_colour)),
        )
        density = simulate_map(st, options, rng)
        atoms = np.array([a.pos.tolist() for ch in st[0] for r in ch for a in r])
        density = degrade_map(density, atoms, self.realism, rng)
        view = standardise(density, resolution * float(rng.uniform(*aug.stated_resolution)))
        yield from self._crops(view, kept, deleted, rng)

    def _noise(self, rng):
        """Crops of a map of smoothed white noise (`simulate.noise_map`), with no Cα targets."""
        aug = self.aug
        edge = int(rng.integers(aug.noise_edge[0], aug.noise_edge[1] + 1))
        noise = noise_map(edge, float(rng.uniform(*aug.noise_smoothing)),
                          float(rng.uniform(*aug.noise_voxel)), rng)
        view = standardise(noise, float(rng.uniform(*aug.resolution)))
        yield from self._crops(view, np.zeros((0, 3)), np.zeros((0, 3)), rng)

    def _crops(self, view, kept: np.ndarray, deleted: np.ndarray, rng):
        aug = self.aug
        size = self.crop
        prepared, features = detection_features(
            detection_grid(view), (size,) * 3, view.solvent if self.solvent_frame else None)
        shape = np.array(features.shape[1:])
        ca_zyx = prepared.xyz_to_voxel(kept)[:, ::-1]
        for _ in range(self.crops_per_map):
            if len(deleted) and rng.random() < aug.empty_crop_fraction:
                centre = prepared.xyz_to_voxel(deleted[int(rng.integers(len(deleted)))])[::-1]
            elif not len(ca_zyx):
                centre = rng.uniform(0, shape)
            else:
                centre = ca_zyx[int(rng.integers(len(ca_zyx)))]
            centre = centre + rng.normal(0, size / 6, 3)
            lo = np.clip(np.round(centre - size / 2).astype(int), 0, np.array(features.shape[1:]) - size)
            crop = features[:, lo[0] : lo[0] + size, lo[1] : lo[1] + size, lo[2] : lo[2] + size]
            local = ca_zyx - lo
            perm, flips = _random_rotation(rng)
            crop = crop.transpose((0,) + tuple(p + 1 for p in perm))
            local = local[:, list(perm)]
            for axis, flip in enumerate(flips):
                if flip:
                    crop = np.flip(crop, axis + 1)
                    local[:, axis] = size - 1 - local[:, axis]
            targets = make_targets(local, size)
            yield (torch.from_numpy(np.ascontiguousarray(crop)),) + tuple(map(torch.from_numpy, targets))


def _real_view(case) -> tuple:
    """The standardised real map of a `DevCase` and its deposited Cα ``[N, 3]`` (Å)."""
    from ..maps import read_map

    return standardise(read_map(case.map_path), case.resolution), ca_coordinates(read_structure(case.model_path))


def detection_loss(output: torch.Tensor, heat, positive, offsets, offset_mask,
                   offset_weight: float = OFFSET_LOSS_WEIGHT) -> tuple[torch.Tensor, dict]:
    """Penalty-reduced focal loss + ``offset_weight`` times the offset L1 (voxels, per
    neighbourhood voxel of a Cα). ``output`` ``[B, 4, S, S, S]``."""
    logit = output[:, 0].float()
    prob = torch.sigmoid(logit).clamp(1e-6, 1 - 1e-6)
    log_p = torch.nn.functional.logsigmoid(logit)
    log_not_p = torch.nn.functional.logsigmoid(-logit)
    pos = positive.float()
    pos_loss = -((1 - prob) ** FOCAL_ALPHA) * log_p * pos
    neg_loss = -((1 - heat) ** FOCAL_BETA) * (prob**FOCAL_ALPHA) * log_not_p * (1 - pos)
    num_pos = pos.sum().clamp(min=1)
    focal = (pos_loss.sum() + neg_loss.sum()) / num_pos
    offset_error = (output[:, 1:].float() - offsets).abs().sum(1)
    offset = (offset_error * offset_mask.float()).sum() / offset_mask.float().sum().clamp(min=1)
    total = focal + offset_weight * offset
    return total, {"focal": float(focal.detach()), "offset": float(offset.detach())}


def validation_figures(network, records, resolution: float, threshold: float, seed: int = 7):
    """Recall, precision (3 Å, one-to-one) and median error on held-out simulated maps."""
    from ..detect.inference import DetectionOptions, detect_calphas
    from ..evaluate import match_calpha

    rng = np.random.default_rng(seed)
    found = total_ref = total_pred = 0
    errors = []
    for record in records:
        structure = read_structure(record.path)
        density = simulate_map(structure, SimulationOptions(resolution=resolution, snr=3.0), rng)
        result = detect_calphas(standardise(density, resolution), network,
                                DetectionOptions(threshold=threshold))
        reference = ca_coordinates(structure)
        pred_index, ref_index = match_calpha(result.points.xyz, reference)
        distance = np.linalg.norm(result.points.xyz[pred_index] - reference[ref_index], axis=1)
        found += len(ref_index)
        total_ref += len(reference)
        total_pred += len(result.points)
        errors.extend(distance.tolist())
    return {
        "recall": found / max(total_ref, 1),
        "precision": found / max(total_pred, 1),
        "median_error": float(np.median(errors)) if errors else float("nan"),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, default=checkpoint_path("detect"))
    parser.add_argument("--minutes", type=float, default=60.0, help="wall-time budget")
    parser.add_argument("--steps", type=int, default=None, help="stop after this many steps in total")
    parser.add_argument("--crop", type=int, default=48, help="crop edge in 1.5 Å voxels")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--save-every", type=int, default=250)
    parser.add_argument("--validate-every", type=int, default=1000)
    parser.add_argument("--log", type=Path, default=Path("runs/detect/log.jsonl"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--crops-per-map", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads of the training process (the data worker takes "
                             "another core; 2 threads under contention made steps 3x slower)")
    add_real_fold_args(parser, real_fraction=0.3, unit="maps")
    parser.add_argument("--noise-fraction", type=float, default=0.0,
                        help="fraction of maps that are noise alone, with no Cα")
    parser.add_argument("--resolution", type=float, nargs=2, default=Augmentation.resolution,
                        metavar=("LOW", "HIGH"),
                        help="range of the simulated maps' resolution, Å (default "
                             f"{Augmentation.resolution[0]:g}-{Augmentation.resolution[1]:g})")
    add_noise_colour_arg(parser)
    parser.add_argument("--solvent-frame", action="store_true",
                        help="frame maps smaller than a window with the solvent's level "
                             "(DetectorConfig.solvent_frame; kept in the checkpoint's config)")
    parser.add_argument("--offset-weight", type=float, default=OFFSET_LOSS_WEIGHT,
                        help="weight of the offset L1 against the focal loss (default "
                             f"{OFFSET_LOSS_WEIGHT:g})")
    parser.add_argument("--no-bf16", dest="bf16", action="store_false",
                        help="train in float32 (bf16 autocast halves the CPU step time)")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    split = default_split()
    state = load_checkpoint(args.checkpoint) if args.checkpoint.exists() else None
    config = DetectorConfig(**state["config"]) if state else DetectorConfig()
    if args.solvent_frame:
        config = dataclasses.replace(config, solvent_frame=True)
    network = CalphaDetector(config)
    optimizer = torch.optim.AdamW(network.parameters(), lr=args.lr, weight_decay=1e-4)
    real_cases = fold_cases(args.real_fold) if args.real_fold else []
    run = TrainingRun(args.checkpoint, args.log, network, optimizer, dataclasses.asdict(config),
                      extra={"crop": args.crop, "batch": args.batch, "noise_fraction": args.noise_fraction,
                             "resolution": list(args.resolution),
                             "offset_weight": args.offset_weight,
                             "noise_colour": list(args.noise_colour),
                             "real_maps": sorted(c.name for c in real_cases)})
    run.resume(state)
    run.set_lr(args.lr)

    aug = Augmentation(noise_map_fraction=args.noise_fraction, resolution=tuple(args.resolution),
                       noise_colour=tuple(args.noise_colour))
    dataset = TrainingCrops(split["train"], args.crop, crops_per_map=args.crops_per_map, aug=aug,
                            seed=args.seed + run.step, real_cases=real_cases,
                            real_fraction=args.real_fraction, solvent_frame=config.solvent_frame)
    loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch, num_workers=1, prefetch_factor=4)
    val_records = sorted(split["validation"], key=lambda r: r.num_residues)[:: max(len(split["validation"]) // 4, 1)][:4]

    running = []
    run.start()
    for features, *targets in loader:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
            output = network(features)
        loss, parts = detection_loss(output, *targets, offset_weight=args.offset_weight)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(network.parameters(), 5.0)
        optimizer.step()
        run.tick()
        running.append(float(loss.detach()))
        if run.step % 50 == 0:
            run.log({"step": run.step, "loss": float(np.mean(running)), **parts, "wall": round(run.wall_seconds)})
            running = []
        if run.step % args.validate_every == 0 and val_records:
            run.add_validation("validation_3.0A", validation_figures(network, val_records, 3.0, 0.3))
        if run.end_step(args.save_every, args.minutes, args.steps):
            break
    run.finish()


if __name__ == "__main__":
    main()
