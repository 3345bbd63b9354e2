"""Threading: placing the chains built from one graph-network pass onto the input sequences
(METHODS §4). `thread` is the one entry; it returns a `Threading`.

The stages run in this order, one module each; the two threaders differ only in the search
(steps 1-2):

1. `profiles`: each chain's residue-type probabilities and confidence become an HMMER3 profile
   with one match state per residue, calibrated for E-values;
2. `search`: each profile is searched against the stretches of the sequences not ``taken``;
   the best alignment with an E-value up to ``max_evalue`` numbers the chain. With the
   Structure Generator (``"structgen"``), `structgen` does steps 1-2 instead: the network
   scores every node at every sequence position, and each chain is numbered at the offset
   where its nodes, in their traced order, score best (its own E-value);
3. `copies.keep_supported`: a chain weaker than the model's anchor cut
   (`copies.anchor_evalue`: the per-chain cut corrected for the number of chains searched)
   stays threaded only next to an anchor of its sequence that can reach it;
4. `placement` (``placement=True``): unthreaded chains go into the sequence gaps between
   confidently threaded ones;
5. `copies.assign_copies`: the threaded chains of each sequence are
   grouped into copies, no position placed twice within one, each copy one chain; this comes
   before joining, while each chain still has its own E-value (a joined chain takes its
   strongest part's);
6. `joining`: chains that continue each other along one sequence are joined;
7. `closure` (``closure=True``): numbering gaps of threaded chains are filled, and their ends
   extended, with untraced nodes.

After a build's last round, `confirm` checks the weak threads against residue types blind to
their sequence. It is not a stage of `thread`: its readings are graph-network passes, which the
pipeline runs (`pipeline._blind_checked`), and it runs once, not every round. Nor is `merging`, which
merges the threadings of several starts of a build's rounds into the one that threads most
(`pipeline._merged`, with ``restarts`` > 1).

With the Structure Generator the HMM threader runs as well: when the Structure Generator
threads fewer than `STRUCTGEN_MIN_SHARE` of the residues the HMM threader threads, or numbers
fewer than `STRUCTGEN_MIN_AGREEMENT` of the residues both thread as the HMM threader does, the
HMM threader's result is returned instead, with a warning (`Threading.threader` says which one
threaded). The caller names the chains (`joining.name_chains`).

The split: one module per stage, each taking and returning `ChainMatch` lists, plus `matches`
for those types (the Cα reach every stage tests numbering by is `cryobuild.residues.reach`,
which `cryobuild.validation` uses too), so that stages import each other only
for what they compute (placement and closure score with the profiles' match emissions; closure
extends only chains placement would anchor on). `profiles` also holds the profile files and
database search of the ``build_no_seq`` and ``hmm_search`` commands: they are the same
profiles. `structgen` holds only the threader and its network loader; the network, its
training samples and its benchmark stay in `cryobuild.structgen`. It imports torch, so it is
imported only when the Structure Generator threads.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ..progress import CancelToken
from ..sequences import Sequence
from .closure import Anchor, close_gaps
from .copies import anchor_evalue, assign_copies, keep_supported
from .joining import join_matches
from .matches import ChainMatch, NamedChain
from .placement import place_chains
from .search import MAX_THREAD_EVALUE, thread_chains

__all__ = [
    "Anchor",
    "STRUCTGEN_MIN_AGREEMENT",
    "STRUCTGEN_MIN_SHARE",
    "THREADERS",
    "ChainMatch",
    "NamedChain",
    "Threading",
    "thread",
]

#: The threaders `thread` runs: HMM profiles (`search`) and the Structure Generator (`structgen`).
THREADERS = ("hmm", "structgen")
#: The Structure Generator's threading is replaced by the HMM threader's when it threads fewer
#: than this share of the residues the HMM threader threads. It is issue 17's bar for the
#: Structure Generator (sequence recall >= 0.8 x the HMM threader's): a threaded residue is at
#: best a recalled one, and the HMM threader's final models hold few wrong residues (Cα
#: precision 0.93-0.98 at its E-value cut, `search.MAX_THREAD_EVALUE`), so a threader under
#: this share misses the bar.
STRUCTGEN_MIN_SHARE = 0.8
#: ... and when, of the residues both threaders thread, it numbers fewer than this share as
#: the HMM threader does (same sequence and position). One of the two is then wrong, and on the
#: real maps the HMM threader numbers more of its residues right: on EMD-2566 (seed 0, the
#: twenty-third stop) the Structure Generator threaded 176 residues, about as many as the HMM
#: threader's 180, but numbered only 49% of them right against 86%.
STRUCTGEN_MIN_AGREEMENT = 0.8


@dataclasses.dataclass(frozen=True, eq=False)
class Threading:
    """The result of `thread`.

    Attributes
    ----------
    matches : list of ChainMatch
        Every chain, threaded or not, after joining (and closure), made of the nodes of the
        input chains.
    threader : str
        The threader that produced ``matches``: ``"hmm"`` or ``"structgen"`` (``"hmm"`` when
        the Structure Generator fell short of `STRUCTGEN_MIN_SHARE` or
        `STRUCTGEN_MIN_AGREEMENT`).
    warnings : list of str
        Messages for the user, e.g. why the Structure Generator's threading was replaced.
    """

    matches: list[ChainMatch]
    threader: str
    warnings: list[str]

    @property
    def threaded_residues(self) -> int:
        """How many residues of ``matches`` have a sequence position."""
        return int(sum(match.assigned.sum() for match in self.matches))


def thread(
    chains: list[np.ndarray],
    aa_probs: np.ndarray,
    confidence: np.ndarray,
    backbone: np.ndarray,
    sequences: list[Sequence],
    *,
    threader: str = "hmm",
    max_evalue: float = MAX_THREAD_EVALUE,
    placement: bool = True,
    closure: bool = True,
    composition_correction: bool = True,
    structgen_fallback: bool = True,
    min_length: int,
    taken: list[np.ndarray] | None = None,
    structgen=None,
    rng: np.random.Generator,
    cancel: CancelToken | None = None,
    anchors: tuple[Anchor, ...] = (),
) -> Threading:
    """Thread ``chains`` onto ``sequences`` (the stages of the module docstring).

    Parameters
    ----------
    chains : list of int ``[L_c]``
        Node indices of each chain in N -> C order (`cryobuild.chains.link_chains`).
    aa_probs : float ``[N, 20]``
        Residue-type probabilities of all nodes (``AA_ORDER``).
    confidence : float ``[N]``
        Confidence of all nodes, 0-100.
    backbone : float ``[N, 3, 3]``
        N, CA, C positions of all nodes, Å.
    sequences : list of Sequence
        The input sequences (one record per chain copy or per distinct sequence). Without
        any, every chain comes back unthreaded.
    threader : {"hmm", "structgen"}
        The threader to use (`THREADERS`).
    max_evalue : float
        Chains whose best alignment has a larger E-value stay unthreaded.
    placement, closure : bool
        Run the placement and closure stages.
    composition_correction : bool
        HMM threader: correct the E-values for the composition of the stretch hit
        (`search.composition_factor`; the Structure Generator's null is the sequences'
        shuffles, which have their composition).
    structgen_fallback : bool
        Structure Generator: run the HMM threader too and return its threading when the
        Structure Generator threads fewer than `STRUCTGEN_MIN_SHARE` of its residues, or
        numbers fewer than `STRUCTGEN_MIN_AGREEMENT` of the residues both thread as it does.
    min_length : int
        Shortest unthreaded chain (residues) that placement places.
    taken : list of bool ``[len(sequences[s])]``, optional
        Positions already held by accepted residues, never used again.
    structgen : StructureGenerator, optional
        The network of the structgen threader (`structgen.load_structgen`), in eval mode.
    rng : numpy.random.Generator
        For the profiles' E-value calibration.
    cancel : CancelToken, optional
        Checked once per chain (per sequence by the Structure Generator's scoring).
    anchors : tuple of Anchor
        Residues outside the nodes that hold their sequence positions (a region rebuild's kept
        flanking residues): closure fills the gaps up to them too (`closure.Anchor`).

    Raises
    ------
    ValueError
        For an unknown ``threader``, or ``"structgen"`` with sequences but no ``structgen``
        network.
    """
    if threader not in THREADERS:
        raise ValueError(f"threader must be one of {', '.join(THREADERS)}, got {threader!r}")
    if not sequences:
        return Threading([ChainMatch.unthreaded(chain, aa_probs) for chain in chains], threader, [])
    backbone = np.asarray(backbone)
    if threader == "structgen" and structgen is None:
        raise ValueError("the structgen threader needs its network")

    def staged(search: str) -> Threading:
        if search == "hmm":
            matches = thread_chains(chains, aa_probs, confidence, sequences, ca=backbone[:, 1],
                                    taken=taken, max_evalue=max_evalue,
                                    composition_correction=composition_correction, rng=rng,
                                    cancel=cancel)
        else:
            from .structgen import thread_structgen  # imports torch

            matches = thread_structgen(chains, aa_probs, backbone[:, 1], sequences, structgen,
                                       taken=taken, max_evalue=max_evalue, cancel=cancel)
        anchor_cut = anchor_evalue(len(matches), max_evalue)
        matches = keep_supported(matches, backbone[:, 1], aa_probs, anchor_cut=anchor_cut,
                                 searched=len(matches))
        if placement:
            matches = place_chains(matches, aa_probs, confidence, backbone[:, 1], sequences,
                                   min_length=min_length, taken=taken)
        matches = assign_copies(matches, backbone[:, 1], aa_probs, confidence, sequences)
        matches = join_matches(matches, backbone, aa_probs)
        if closure:
            matches = close_gaps(matches, backbone[:, 1], aa_probs, confidence, sequences,
                                 taken=taken, rng=rng, anchors=anchors)
        return Threading(matches, search, [])

    if threader == "hmm" or not structgen_fallback:
        return staged(threader)
    threading, fallback = staged("structgen"), staged("hmm")
    threaded, expected = threading.threaded_residues, fallback.threaded_residues
    if threaded < STRUCTGEN_MIN_SHARE * expected:
        return dataclasses.replace(fallback, warnings=[
            f"the Structure Generator threaded {threaded} residues, the HMM threader {expected}: "
            "this round keeps the HMM threader's threading (the Structure Generator must thread "
            f"at least {STRUCTGEN_MIN_SHARE:.0%} as many)"])
    both, same = _agreement(threading.matches, fallback.matches)
    if same < STRUCTGEN_MIN_AGREEMENT * both:
        return dataclasses.replace(fallback, warnings=[
            f"the Structure Generator numbered {both - same} of the {both} residues both threaders "
            "thread otherwise than the HMM threader: this round keeps the HMM threader's "
            f"threading (they must agree on at least {STRUCTGEN_MIN_AGREEMENT:.0%})"])
    return threading


def _agreement(matches: list[ChainMatch], others: list[ChainMatch]) -> tuple[int, int]:
    """Of the nodes both threadings give a sequence position: how many, and how many get the
    same sequence and position in both."""
    def positions(threading: list[ChainMatch]) -> dict[int, tuple[int, int]]:
        return {int(node): (match.sequence_index, int(number)) for match in threading
                for node, number in zip(match.nodes[match.assigned],
                                        match.residue_number[match.assigned])}

    mine, theirs = positions(matches), positions(others)
    both = mine.keys() & theirs.keys()
    return len(both), sum(mine[node] == theirs[node] for node in both)
