"""A second reading of each residue's type: a 3D CNN on the density around its side chain.

Why a second network: the graph network reads each node's density through an 11³ cube and two
stride-2 convolutions of 16 and 32 channels (`cryobuild.gnn.layers.CubeEncoder`), small enough
to run in every layer of every round. Its residue types from the deposited Cα on real maps are
0.14-0.61 (README.md), and at 3.5-4.5 Å they are what limits threading. This network spends
its whole budget on that one question, once per round: a 15³ cube at 1 Å in the residue's
backbone frame (from the graph network's N, CA, C), centred `CENTRE_OFFSET` along the Cβ
direction so that long side chains fit, read by five convolutions. Its probabilities and the
graph network's are combined (`combine`) before threading.

The map comes as every network sees it (`cryobuild.features.standardise`) and is sampled as
the graph network samples it (`cryobuild.gnn.density.DensityVolume`).
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import torch
from torch import nn

from .checkpoints import checkpoint_path, load_checkpoint
from .device import resolve_device
from .features import NetworkMap
from .geometry import Rigid
from .gnn.density import DensityVolume
from .maps import crop_box
from .residues import NUM_AA

__all__ = [
    "CB_DIRECTION",
    "ClassifierConfig",
    "ResidueClassifier",
    "classify_residues",
    "combine",
    "cube_points",
    "load_classifier",
]

#: Unit vector from CA towards CB in the residue frame (`Rigid.from_3_points`: x along C - CA,
#: y towards N). The mean CB position over 6,527 residues of 30 training-split structures was
#: (-0.526, -0.766, -1.215) Å, spread 0.06-0.08 Å per axis (measured 2026-12-04).
CB_DIRECTION = np.array([-0.526, -0.766, -1.215]) / np.linalg.norm([-0.526, -0.766, -1.215])
#: Residues classified per forward pass at inference.
CHUNK = 512
#: Å of map kept around a chunk's cubes when it is cropped for sampling.
CROP_MARGIN = 12.0


@dataclasses.dataclass(frozen=True)
class ClassifierConfig:
    """Settings of the classifier.

    Attributes
    ----------
    cube_size : int
        Edge of the cube in samples (odd).
    cube_spacing : float
        Å between samples.
    centre_offset : float
        Å from CA to the cube's centre along `CB_DIRECTION`.
    channels : tuple of int
        Output channels of the five convolutions (the 2nd and 4th have stride 2), each
        followed by batch normalisation and ReLU.
    hidden : int
        Width of the fully connected layer before the 20 logits.
    dropout : float
    """

    cube_size: int = 15
    cube_spacing: float = 1.0
    centre_offset: float = 2.0
    channels: tuple[int, ...] = (24, 32, 48, 64, 96)
    hidden: int = 128
    dropout: float = 0.2

    def __post_init__(self):
        if self.cube_size < 5 or self.cube_size % 2 == 0:
            raise ValueError(f"cube_size must be odd and at least 5, got {self.cube_size}")
        if len(self.channels) != 5:
            raise ValueError(f"channels must hold 5 widths, got {self.channels}")


def config_from_dict(values: dict) -> ClassifierConfig:
    """The config saved in a checkpoint (lists back to tuples)."""
    values = dict(values)
    values["channels"] = tuple(values["channels"])
    return ClassifierConfig(**values)


def cube_points(config: ClassifierConfig) -> torch.Tensor:
    """Sample positions ``[S, S, S, 3]`` in the residue frame (Å): a cube around
    ``centre_offset * CB_DIRECTION``."""
    half = config.cube_size // 2
    axis = (torch.arange(config.cube_size, dtype=torch.float32) - half) * config.cube_spacing
    grid = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), dim=-1)
    return grid + torch.as_tensor(config.centre_offset * CB_DIRECTION, dtype=torch.float32)


class ResidueClassifier(nn.Module):
    """Cubes ``[N, 1, S, S, S]`` -> residue-type logits ``[N, 20]``.

    Each convolution is batch-normalised: without it the five layers learned nothing in 700
    steps (loss 2.9, about that of guessing by frequency; fold-B run of 2026-12-04)."""

    def __init__(self, config: ClassifierConfig = ClassifierConfig()):
        super().__init__()
        self.config = config
        layers, width, size = [], 1, config.cube_size
        for index, channels in enumerate(config.channels):
            stride = 2 if index in (1, 3) else 1
            layers += [nn.Conv3d(width, channels, 3, stride=stride, padding=1, bias=False),
                       nn.BatchNorm3d(channels), nn.ReLU()]
            width = channels
            size = (size + 1) // 2 if stride == 2 else size
        self.convolutions = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.Flatten(), nn.Dropout(config.dropout), nn.Linear(width * size**3, config.hidden),
            nn.ReLU(), nn.Linear(config.hidden, NUM_AA),
        )
        self.register_buffer("points", cube_points(config), persistent=False)

    def forward(self, cubes: torch.Tensor) -> torch.Tensor:
        return self.head(self.convolutions(cubes))

    def sample_cubes(self, volume: DensityVolume, frames: Rigid) -> torch.Tensor:
        """Density cubes ``[N, 1, S, S, S]`` of the residues with backbone ``frames`` ``[N]``."""
        points = frames[:, None, None, None].apply(self.points)
        return volume.sample(points)[:, None]

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device


def classify_residues(view: NetworkMap, backbone: np.ndarray, classifier: ResidueClassifier) -> np.ndarray:
    """Residue-type probabilities ``[N, 20]`` of residues with backbone atoms ``backbone``
    ``[N, 3, 3]`` (N, CA, C; Å) in the map ``view``."""
    device = classifier.device
    classifier.eval()
    out = np.empty((len(backbone), NUM_AA), dtype=np.float32)
    reach = classifier.config.centre_offset + classifier.config.cube_size * classifier.config.cube_spacing
    with torch.inference_mode():
        for first in range(0, len(backbone), CHUNK):
            atoms = backbone[first:first + CHUNK]
            ca = atoms[:, 1]
            region = crop_box(view.density, ca.min(0) - reach - CROP_MARGIN, ca.max(0) + reach + CROP_MARGIN)
            volume = DensityVolume.from_map(region, device)
            tensor = torch.as_tensor(atoms, dtype=torch.float32, device=device)
            frames = Rigid.from_3_points(tensor[:, 0], tensor[:, 1], tensor[:, 2])
            logits = classifier(classifier.sample_cubes(volume, frames))
            out[first:first + CHUNK] = torch.softmax(logits.float(), -1).cpu().numpy()
    return out


def combine(graph_probs: np.ndarray, classifier_probs: np.ndarray, weight: float) -> np.ndarray:
    """``p ∝ p_graph^(1 - weight) · p_classifier^weight`` per residue ``[N, 20]`` (a weighted
    geometric mean: both read the same density, so their evidence is not independent and a
    plain product would be overconfident)."""
    logs = (1.0 - weight) * np.log(np.clip(graph_probs, 1e-8, 1)) + weight * np.log(np.clip(classifier_probs, 1e-8, 1))
    logs -= logs.max(-1, keepdims=True)
    probs = np.exp(logs)
    return (probs / probs.sum(-1, keepdims=True)).astype(np.float32)


def load_classifier(path: str | os.PathLike | None = None, device: str | torch.device | None = None
                    ) -> ResidueClassifier:
    """The trained classifier (default ``weights/classifier.pt``) on ``device``."""
    state = load_checkpoint(path if path is not None else checkpoint_path("classifier"))
    classifier = ResidueClassifier(config_from_dict(state["config"]))
    classifier.load_state_dict(state["model"])
    return classifier.to(resolve_device(device)).eval()
