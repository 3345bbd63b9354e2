"""`CalphaPoints`: candidate Cα positions, the hand-over from detection to the graph network."""

from __future__ import annotations

import dataclasses

import numpy as np

__all__ = ["CalphaPoints"]


@dataclasses.dataclass(frozen=True)
class CalphaPoints:
    """Candidate Cα atoms.

    Attributes
    ----------
    xyz : float64 ``[N, 3]``
        Positions in Å (x, y, z), in the map's frame.
    score : float32 ``[N]``
        Detection probability, 0..1.
    """

    xyz: np.ndarray
    score: np.ndarray

    def __post_init__(self):
        xyz = np.asarray(self.xyz, dtype=np.float64).reshape(-1, 3)
        score = np.asarray(self.score, dtype=np.float32).reshape(-1)
        if len(score) != len(xyz):
            raise ValueError(f"{len(xyz)} points but {len(score)} scores")
        object.__setattr__(self, "xyz", xyz)
        object.__setattr__(self, "score", score)

    def __len__(self) -> int:
        return len(self.xyz)

    def select(self, keep: np.ndarray) -> "CalphaPoints":
        """The points where the boolean or index array ``keep`` says so."""
        return CalphaPoints(self.xyz[keep], self.score[keep])
