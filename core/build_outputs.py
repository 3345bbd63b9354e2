"""Writing a build's results to a folder (the edge where typed results become files).

Layout (ModelAngelo's, with cryobuild's additions):

* ``model.cif`` final model: threaded chains and (unless threaded-only) unassigned ones of UNK
  residues, pruned, relaxed; confidence 0-100 as B-factor;
* ``model_raw.cif`` every chain of the last round, threaded or not;
* ``rounds/round_N.cif`` each round's model;
* ``chains.csv`` chain, assignment (``threaded`` or ``unassigned``), sequence, first-last residue,
  residues, match score, E-value, mean confidence (of the final model);
* ``aa_probabilities.csv`` per final residue: chain, number, type, then the 20 probabilities;
* ``unassigned_placements.csv`` where the unassigned chains might go (`cryobuild.thread.hints`):
  chain, rank, sequence, its first-last position, the chain's residues aligned there, score,
  E-value, chance hits, positions already threaded, and the alignment residue by residue as
  runs ``chain residues:sequence positions`` (``12-19:58-65 21-25:66-70``; a header alone when
  there are none);
* ``ca_points.cif`` the detected Cα candidates.

Every file is written atomically: it is replaced whole or not at all, and ``model.cif`` is
written last, so its presence means the build finished. Every file carries the id of the build
that wrote it (`cryobuild.build_folder`): the mmCIF item ``_cryobuild.build_id``, and a first
line ``# cryobuild build <id>`` in the CSV files (``pandas.read_csv(path, comment="#")``).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
from pathlib import Path

import numpy as np

from .atomic import write_bytes_atomic
from .build_folder import ROUNDS
from .errors import InputError
from .models import BuiltModel, model_from_ca, write_model
from .pipeline import BuildResult, ChainReport, RoundResult
from .residues import AA_ORDER, ONE_TO_THREE, UNK_THREE
from .thread.hints import Placement

__all__ = ["BUILD_ID_ITEM", "PLACEMENTS_FILE", "aligned_runs", "write_build", "write_final", "write_round", "chains_csv",
           "placements_csv", "aa_probabilities_csv", "read_chains_csv", "read_placements_csv",
           "read_aa_probabilities_csv"]

#: The mmCIF item of a written model that holds the build's id.
BUILD_ID_ITEM = "_cryobuild.build_id"
#: The file of a build folder that says where its unassigned chains might go.
PLACEMENTS_FILE = "unassigned_placements.csv"


def chains_csv(reports: tuple[ChainReport, ...]) -> str:
    """The chain report as CSV text."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["chain", "assignment", "sequence", "first", "last", "residues", "score_bits",
                     "evalue", "mean_confidence"])
    for r in reports:
        writer.writerow([r.chain_id, "threaded" if r.threaded else "unassigned", r.sequence, r.first,
                         r.last, r.residues, f"{r.score:.1f}", f"{r.evalue:.3g}",
                         f"{r.mean_confidence:.1f}"])
    return buffer.getvalue()


def aligned_runs(aligned: tuple[tuple[int, int], ...]) -> str:
    """A placement's ``aligned`` pairs (chain residue number, sequence position) as runs in
    which both step by one: ``"12-19:58-65 21-25:66-70"`` (a run of one: ``"20:67"``)."""
    runs = []
    for number, position in aligned:
        if runs and number == runs[-1][1] + 1 and position == runs[-1][3] + 1:
            runs[-1][1], runs[-1][3] = number, position
        else:
            runs.append([number, number, position, position])
    return " ".join(f"{a}:{c}" if a == b else f"{a}-{b}:{c}-{d}" for a, b, c, d in runs)


def placements_csv(placements: tuple[Placement, ...]) -> str:
    """Where the unassigned chains might go (`cryobuild.thread.hints.Placement`), as CSV text."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    fields = [field.name for field in dataclasses.fields(Placement)]
    writer.writerow(fields)
    for placement in placements:
        values = [getattr(placement, name) for name in fields]
        values[fields.index("aligned")] = aligned_runs(placement.aligned)
        writer.writerow([f"{v:.3g}" if isinstance(v, float) and math.isfinite(v) else v
                         for v in values])
    return buffer.getvalue()


def aa_probabilities_csv(model: BuiltModel, aa_probs: np.ndarray) -> str:
    """Each residue of ``model`` with its residue-type probabilities ``aa_probs`` ``[R, 20]``,
    as CSV text."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["chain", "residue", "type"] + list(AA_ORDER))
    for i in range(model.num_residues):
        aatype = int(model.aatype[i])
        name = ONE_TO_THREE[AA_ORDER[aatype]] if aatype < len(AA_ORDER) else UNK_THREE
        writer.writerow([model.chain_id[i], int(model.residue_number[i]), name]
                        + [f"{p:.4f}" for p in aa_probs[i]])
    return buffer.getvalue()


# ----------------------------------------------------------------------------- reading back
# ``cryobuild assign`` changes a build folder's final model and the tables that describe it.


def _parsed(path: str | Path, parse_row) -> list:
    """``parse_row(row)`` of each row (a dict by column) of a CSV output, its ``# cryobuild
    build`` line skipped; `InputError` naming the file when it is missing or a row does not
    parse (a table edited by hand, or of another program)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file (is {path.parent} a cryobuild build folder?)")
    lines = [line for line in path.read_text().splitlines() if not line.startswith("#")]
    try:
        return [parse_row(row) for row in csv.DictReader(lines)]
    except (KeyError, ValueError, TypeError) as err:
        raise InputError(f"{path}: not a table cryobuild wrote ({type(err).__name__}: {err})") from None


def read_chains_csv(path: str | Path) -> tuple[ChainReport, ...]:
    """The chain reports of a ``chains.csv`` (`chains_csv`)."""
    return tuple(_parsed(path, lambda row: ChainReport(
        chain_id=row["chain"], sequence=row["sequence"], first=int(row["first"]),
        last=int(row["last"]), residues=int(row["residues"]), score=float(row["score_bits"]),
        evalue=float(row["evalue"]), mean_confidence=float(row["mean_confidence"]))))


def _parse_runs(text: str) -> tuple[tuple[int, int], ...]:
    """`aligned_runs`'s text back as (chain residue number, sequence position) pairs."""
    pairs = []
    for run in text.split():
        numbers, positions = run.split(":")
        first, _, last = numbers.partition("-")
        start = int(positions.partition("-")[0])
        for offset in range(int(last or first) - int(first) + 1):
            pairs.append((int(first) + offset, start + offset))
    return tuple(pairs)


def _placement(row: dict) -> Placement:
    values = {field.name: row[field.name] for field in dataclasses.fields(Placement)}
    for name in ("rank", "first", "last", "chain_first", "chain_last", "already_threaded"):
        values[name] = int(values[name])
    for name in ("score", "evalue", "chance_hits"):
        values[name] = float(values[name])
    values["aligned"] = _parse_runs(values["aligned"])
    return Placement(**values)


def read_placements_csv(path: str | Path) -> tuple[Placement, ...]:
    """The placements of an ``unassigned_placements.csv`` (`placements_csv`)."""
    return tuple(_parsed(path, _placement))


def read_aa_probabilities_csv(path: str | Path) -> dict[tuple[str, int], np.ndarray]:
    """(chain, residue number) -> its 20 residue-type probabilities, of an
    ``aa_probabilities.csv`` (`aa_probabilities_csv`)."""
    return dict(_parsed(path, lambda row: ((row["chain"], int(row["residue"])), np.array(
        [float(row[a]) for a in AA_ORDER], dtype=np.float32))))


def write_round(round_result: RoundResult, folder: str | Path, build_id: str) -> Path:
    """Write a round's model to ``folder/rounds/round_N.cif``; returns the path."""
    path = Path(folder) / ROUNDS / f"round_{round_result.index}.cif"
    return write_model(round_result.model, path, cif_items={BUILD_ID_ITEM: build_id})


def write_final(final: BuiltModel, aa_probs: np.ndarray, reports: tuple[ChainReport, ...],
                placements: tuple[Placement, ...], folder: str | Path, build_id: str) -> list[Path]:
    """Write a final model and the tables that describe it (``chains.csv``,
    ``aa_probabilities.csv``, ``unassigned_placements.csv``) into ``folder``, stamped with
    ``build_id``, ``model.cif`` last; returns the paths written."""
    folder = Path(folder)
    csv_stamp = f"# cryobuild build {build_id}\n"
    written = []
    for name, text in (("chains.csv", chains_csv(reports)),
                       ("aa_probabilities.csv", aa_probabilities_csv(final, aa_probs)),
                       (PLACEMENTS_FILE, placements_csv(placements))):
        written.append(write_bytes_atomic(folder / name, (csv_stamp + text).encode()))
    written.append(write_model(final, folder / "model.cif", cif_items={BUILD_ID_ITEM: build_id}))
    return written


def write_build(result: BuildResult, folder: str | Path, build_id: str) -> list[Path]:
    """Write every output of ``result`` into ``folder``, stamped with ``build_id``; returns the
    paths written."""
    folder = Path(folder)
    stamp = {BUILD_ID_ITEM: build_id}
    written = [write_model(model_from_ca(result.points.xyz, result.points.score), folder / "ca_points.cif",
                           cif_items=stamp)]
    for round_result in result.rounds:
        written.append(write_round(round_result, folder, build_id))
    written.append(write_model(result.raw, folder / "model_raw.cif", cif_items=stamp))
    return written + write_final(result.final, result.final_aa_probs, result.final_chains,
                                 result.placements, folder, build_id)
