"""The Cα detection network: a small residual 3D U-Net.

Input ``[B, 2, D, H, W]``: the z-scored density and its local standard deviation, on a 1.5 Å
grid. Output ``[B, 4, D, H, W]``: channel 0 is the logit that a Cα lies in the voxel, channels
1-3 the offset from the voxel centre to the nearest Cα in voxels, ``(x, y, z)``, within
±`MAX_OFFSET` (only meaningful near a Cα). The offset head puts points closer than the 1.5 Å voxel
grid allows (target: median error <= 0.6 Å).
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

__all__ = ["DetectorConfig", "CalphaDetector", "load_detector"]

#: Largest offset (voxels) the offset head can express: the Cα can be reached from any voxel of
#: the 3x3x3 neighbourhood of its own voxel.
MAX_OFFSET = 1.5


@dataclasses.dataclass(frozen=True)
class DetectorConfig:
    """Architecture: ``channels`` per U-Net level (finest first), residual blocks per level;
    and what the network reads beyond a map's box (`detect.inference.detection_features`):
    ``solvent_frame`` the solvent's level, otherwise 0 (the molecule's mean after
    standardisation), as every detector trained before 2026-12-05's twelfth stop read it."""

    channels: tuple[int, ...] = (16, 32, 64, 96)
    blocks_per_level: int = 1
    in_channels: int = 2
    solvent_frame: bool = False

    def __post_init__(self):
        if len(self.channels) < 2 or self.blocks_per_level < 1:
            raise ValueError(f"invalid detector config {self}")

    @property
    def divisor(self) -> int:
        """Input sizes must be multiples of this (one halving per level below the first)."""
        return 2 ** (len(self.channels) - 1)


class _ResidualBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv1 = nn.Conv3d(in_channels, out_channels, 3, padding=1, bias=False)
        self.norm1 = nn.InstanceNorm3d(out_channels, affine=True)
        self.conv2 = nn.Conv3d(out_channels, out_channels, 3, padding=1, bias=False)
        self.norm2 = nn.InstanceNorm3d(out_channels, affine=True)
        self.skip = (
            nn.Identity()
            if in_channels == out_channels
            else nn.Conv3d(in_channels, out_channels, 1, bias=False)
        )
        self.activation = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.activation(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        return self.activation(out + self.skip(x))


class CalphaDetector(nn.Module):
    """Residual U-Net: ``[B, C_in, D, H, W] -> [B, 4, D, H, W]`` (logit, 3 offsets)."""

    def __init__(self, config: DetectorConfig = DetectorConfig()):
        super().__init__()
        self.config = config
        channels = config.channels
        self.encoders = nn.ModuleList()
        previous = config.in_channels
        for width in channels:
            blocks = [_ResidualBlock(previous, width)]
            blocks += [_ResidualBlock(width, width) for _ in range(config.blocks_per_level - 1)]
            self.encoders.append(nn.Sequential(*blocks))
            previous = width
        self.downsample = nn.MaxPool3d(2)
        self.upsamplers = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for coarse, fine in zip(channels[::-1][:-1], channels[::-1][1:]):
            self.upsamplers.append(nn.ConvTranspose3d(coarse, fine, 2, stride=2))
            self.decoders.append(_ResidualBlock(2 * fine, fine))
        self.head = nn.Conv3d(channels[0], 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if any(n % self.config.divisor for n in x.shape[2:]):
            raise ValueError(
                f"input sizes {tuple(x.shape[2:])} must be multiples of {self.config.divisor}"
            )
        skips = []
        for level, encoder in enumerate(self.encoders):
            if level:
                x = self.downsample(x)
            x = encoder(x)
            skips.append(x)
        for upsample, decoder, skip in zip(self.upsamplers, self.decoders, skips[-2::-1]):
            x = decoder(torch.cat([upsample(x), skip], dim=1))
        out = self.head(x)
        # [B, 4, D, H, W]: logit, then offsets squashed to (-MAX_OFFSET, MAX_OFFSET)
        return torch.cat([out[:, :1], MAX_OFFSET * torch.tanh(out[:, 1:])], dim=1)


def load_detector(checkpoint=None, device=None) -> CalphaDetector:
    """The trained detector from ``checkpoint`` (default: the bundled ``detect.pt``), in eval
    mode on ``device`` (default CPU)."""
    from ..checkpoints import checkpoint_path, load_checkpoint

    state = load_checkpoint(checkpoint if checkpoint is not None else checkpoint_path("detect"))
    network = CalphaDetector(DetectorConfig(**{k: tuple(v) if isinstance(v, list) else v
                                               for k, v in state["config"].items()}))
    network.load_state_dict(state["model"])
    network.eval()
    return network.to(device) if device is not None else network
