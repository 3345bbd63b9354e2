"""What threading gives each chain: `ChainMatch` (a chain and its sequence positions) and
`NamedChain` (with its chain ID).

Every stage of `cryobuild.thread` takes and returns `ChainMatch` lists; only `joining.name_chains`
makes `NamedChain` objects.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

__all__ = ["ChainMatch", "NamedChain", "concatenate"]


@dataclasses.dataclass(frozen=True, eq=False)
class ChainMatch:
    """A chain and the sequence positions threading gave its residues.

    Attributes
    ----------
    nodes : int64 ``[L]``
        Node indices of the chain's residues in N -> C order.
    sequence_index : int
        Index of the matched input sequence, or -1 when the chain is unthreadable.
    residue_number : int64 ``[L]``
        1-based position in the matched sequence of each residue; -1 where unassigned.
    aatype : int64 ``[L]``
        Residue type (index into ``AA_ORDER``; 20 for ``X``): the sequence's where assigned,
        the most probable predicted type elsewhere.
    score : float
        Bit score of the best alignment (summed over joined chains); NaN when nothing aligned.
    evalue : float
        Its E-value (the smallest of joined chains); inf when nothing aligned.

    Instances compare by identity (``eq=False``).
    """

    nodes: np.ndarray
    sequence_index: int
    residue_number: np.ndarray
    aatype: np.ndarray
    score: float
    evalue: float

    def __post_init__(self):
        nodes = np.asarray(self.nodes, dtype=np.int64).reshape(-1)
        numbers = np.asarray(self.residue_number, dtype=np.int64).reshape(-1)
        aatype = np.asarray(self.aatype, dtype=np.int64).reshape(-1)
        if numbers.shape != nodes.shape or aatype.shape != nodes.shape:
            raise ValueError(
                f"nodes, residue_number and aatype must have one length, got {nodes.shape}, "
                f"{numbers.shape}, {aatype.shape}"
            )
        if self.sequence_index < 0 and np.any(numbers >= 0):
            raise ValueError("an unthreaded chain (sequence_index -1) has no residue numbers")
        object.__setattr__(self, "nodes", nodes)
        object.__setattr__(self, "residue_number", numbers)
        object.__setattr__(self, "aatype", aatype)

    @classmethod
    def unthreaded(cls, nodes: np.ndarray, aa_probs: np.ndarray, score: float = math.nan,
                   evalue: float = math.inf) -> ChainMatch:
        """A chain given no sequence: no residue numbers, the most probable type of each node
        (``aa_probs`` ``[N, 20]`` of all nodes), and the best alignment's ``score`` and
        ``evalue`` if one was found but rejected."""
        return cls(
            nodes=nodes,
            sequence_index=-1,
            residue_number=np.full(len(nodes), -1),
            aatype=np.argmax(aa_probs[nodes], axis=1),
            score=score,
            evalue=evalue,
        )

    def part(self, residues) -> ChainMatch:
        """This chain's residues ``residues`` (a slice, or bool ``[L]``), in chain order, with
        its sequence, score and E-value."""
        return dataclasses.replace(self, nodes=self.nodes[residues],
                                   residue_number=self.residue_number[residues],
                                   aatype=self.aatype[residues])

    @property
    def threaded(self) -> bool:
        return self.sequence_index >= 0

    @property
    def assigned(self) -> np.ndarray:
        """bool ``[L]``: residues with a residue number."""
        return self.residue_number >= 0


def concatenate(parts: list[ChainMatch]) -> ChainMatch:
    """One chain of ``parts`` of one sequence, in the order given: nodes, numbers and types
    concatenated, scores summed, the smallest E-value."""
    if len(parts) == 1:
        return parts[0]
    return ChainMatch(
        nodes=np.concatenate([part.nodes for part in parts]),
        sequence_index=parts[0].sequence_index,
        residue_number=np.concatenate([part.residue_number for part in parts]),
        aatype=np.concatenate([part.aatype for part in parts]),
        score=float(sum(part.score for part in parts)),
        evalue=float(min(part.evalue for part in parts)),
    )


@dataclasses.dataclass(frozen=True)
class NamedChain:
    """A chain with its name (see `name_chains`).

    Attributes
    ----------
    chain_id : str
        Chain name for the model file (1 character for the first 62 chains, then 2).
    label : str
        Human-readable origin: ``"<sequence name> copy <k>"`` or ``"unassigned <k>"``.
    copy : int
        1-based copy number among the chains of the same sequence (or of the unassigned ones).
    match : ChainMatch
        The chain.
    """

    chain_id: str
    label: str
    copy: int
    match: ChainMatch

