"""A finished build folder as the verbs that change its final model read it and write it back
(``cryobuild assign``, ``cryobuild rebuild``): the ``build.log`` that names the build's map,
FASTA and options, the final model with the tables that describe it, and all of those
rewritten together, as a build writes them (`cryobuild.build_folder`)."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np

from ..build_folder import BUILD_LOG, ROUNDS, read_log

__all__ = ["UNCHANGED_OUTPUTS", "build_inputs", "build_log", "build_options", "final_tables",
           "rewrite"]

#: Outputs of the build that a change of its final model leaves as they are (copied into the
#: new outputs).
UNCHANGED_OUTPUTS = ("ca_points.cif", "model_raw.cif", ROUNDS)


def build_log(folder: Path, given: bool) -> dict:
    """The folder's ``build.log`` (empty when there is none and the map and FASTA are
    ``given``: a ``cryobuild batch`` folder has none)."""
    from ..errors import InputError

    try:
        return read_log(folder)
    except FileNotFoundError:
        if (folder / "hmm_profiles").is_dir():
            raise InputError(f"{folder}: a build without sequences (build_no_seq) has no "
                             "sequence to place its chains on: build with the FASTA "
                             "(cryobuild build)") from None
        if not (folder / "model.cif").is_file():
            raise InputError(f"{folder}: no model.cif here (is it a cryobuild build folder?)") from None
        if given:
            return {}
        raise InputError(f"{folder}: no build.log to name the map and FASTA the build used "
                         "(a cryobuild batch folder): give them with -v and -f") from None


def build_inputs(args, log: dict) -> tuple[str, str, float | None]:
    """The map file, FASTA file and resolution (Å, None: estimated) of a verb's ``args``
    (``map``, ``fasta``, ``resolution``), each defaulting to the build's (``log``)."""
    from ..errors import InputError

    map_path, fasta_path = args.map or log.get("map"), args.fasta or log.get("fasta")
    if not map_path or not fasta_path:
        raise InputError("the build.log names no map or FASTA file: give them with -v and -f")
    resolution = args.resolution if args.resolution is not None else log.get("resolution")
    return map_path, fasta_path, resolution


def build_options(log: dict, **changes):
    """The build's `pipeline.BuildOptions` as its ``build.log`` records them (the defaults for
    what it does not record), with ``changes``."""
    from ..pipeline import BuildOptions

    recorded = {field.name: log[field.name] for field in dataclasses.fields(BuildOptions)
                if field.name in log}
    return BuildOptions(**{**recorded, **changes})


def final_tables(folder: Path):
    """A build folder's final model with its residue-type probabilities ``[R, 20]``, chain
    reports and placements, as its build wrote them (`InputError` otherwise: a change on top of
    an edited model would mix the two, and its tables would no longer describe it)."""
    from ..build_folder import as_written
    from ..build_outputs import (PLACEMENTS_FILE, read_aa_probabilities_csv, read_chains_csv,
                                 read_placements_csv)
    from ..errors import InputError
    from ..models import read_model

    if not as_written(folder, "model.cif"):
        raise InputError(f"{folder / 'model.cif'} is not as its build wrote it (changed since, or "
                         "written before cryobuild kept a record): this works on a build's own "
                         "model, so that its chains and tables agree")
    model = read_model(folder / "model.cif")
    probabilities = read_aa_probabilities_csv(folder / "aa_probabilities.csv")
    keys = list(zip(model.chain_id.tolist(), model.residue_number.tolist()))
    if any(key not in probabilities for key in keys):
        raise InputError(f"{folder / 'aa_probabilities.csv'} does not list every residue of "
                         "model.cif")
    return (model, np.stack([probabilities[key] for key in keys]),
            read_chains_csv(folder / "chains.csv"),
            read_placements_csv(folder / PLACEMENTS_FILE))


def rewrite(claimed, log: dict, final, aa_probs, reports, placements) -> Path:
    """Save a changed final model into the build folder ``claimed``
    (`build_folder.BuildFolder`): its tables (`build_outputs.write_final`) and ``log`` as the
    new ``build.log``, stamped with the claim's build id, beside copies of the
    `UNCHANGED_OUTPUTS`; returns the folder (`cli.build.save_outputs`)."""
    from ..atomic import write_bytes_atomic
    from ..build_outputs import write_final
    from .build import save_outputs

    folder = claimed.path
    log = dict(log, build_id=claimed.build_id)

    def write(destination: Path) -> None:
        for name in UNCHANGED_OUTPUTS:
            source = folder / name
            if source.is_dir():
                shutil.copytree(source, destination / name)
            elif source.is_file():
                shutil.copy2(source, destination / name)
        write_bytes_atomic(destination / BUILD_LOG, (json.dumps(log, indent=1) + "\n").encode())
        write_final(final, aa_probs, reports, placements, destination, claimed.build_id)

    return save_outputs(claimed, write)
