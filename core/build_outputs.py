"""Writing a build's results to a folder (the edge where typed results become files).

Layout (ModelAngelo's, with cryobuild's additions):

* ``model.cif`` final model: threaded chains, pruned, relaxed; confidence 0-100 as B-factor;
* ``model_raw.cif`` every chain of the last round, threaded or not;
* ``rounds/round_N.cif`` each round's model;
* ``chains.csv`` chain, sequence, first-last residue, residues, match score, E-value, mean
  confidence (of the final model);
* ``aa_probabilities.csv`` per final residue: chain, number, type, then the 20 probabilities;
* ``ca_points.cif`` the detected Cα candidates.

Every file is written atomically: it is replaced whole or not at all, and ``model.cif`` is
written last, so its presence means the build finished.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from .atomic import write_bytes_atomic
from .models import model_from_ca, write_model
from .pipeline import BuildResult, ChainReport
from .residues import AA_ORDER, ONE_TO_THREE, UNK_THREE

__all__ = ["write_build", "chains_csv"]


def chains_csv(reports: tuple[ChainReport, ...]) -> str:
    """The chain report as CSV text."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["chain", "sequence", "first", "last", "residues", "score_bits", "evalue",
                     "mean_confidence"])
    for r in reports:
        writer.writerow([r.chain_id, r.sequence, r.first, r.last, r.residues, f"{r.score:.1f}",
                         f"{r.evalue:.3g}", f"{r.mean_confidence:.1f}"])
    return buffer.getvalue()


def _aa_probs_csv(result: BuildResult) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["chain", "residue", "type"] + list(AA_ORDER))
    model = result.final
    for i in range(model.num_residues):
        aatype = int(model.aatype[i])
        name = ONE_TO_THREE[AA_ORDER[aatype]] if aatype < len(AA_ORDER) else UNK_THREE
        writer.writerow([model.chain_id[i], int(model.residue_number[i]), name]
                        + [f"{p:.4f}" for p in result.final_aa_probs[i]])
    return buffer.getvalue()


def write_build(result: BuildResult, folder: str | Path) -> list[Path]:
    """Write every output of ``result`` into ``folder``; returns the paths written."""
    folder = Path(folder)
    written = [write_model(model_from_ca(result.points.xyz, result.points.score), folder / "ca_points.cif")]
    for round_result in result.rounds:
        written.append(write_model(round_result.model, folder / "rounds" / f"round_{round_result.index}.cif"))
    written.append(write_model(result.raw, folder / "model_raw.cif"))
    written.append(write_bytes_atomic(folder / "chains.csv", chains_csv(result.final_chains).encode()))
    written.append(write_bytes_atomic(folder / "aa_probabilities.csv", _aa_probs_csv(result).encode()))
    written.append(write_model(result.final, folder / "model.cif"))
    return written
