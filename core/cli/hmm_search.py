"""``cryobuild hmm_search``: search a sequence database with a build's HMM profiles.

Reads ``INPUT/hmm_profiles/*.hmm`` (written by ``build_no_seq``), searches the FASTA database
with each profile (`cryobuild.thread.profiles.search_profiles`), writes ``OUTPUT/hits.csv``
atomically with the columns ``profile, target, bits, evalue, rank`` and prints each profile's
best hits.
"""

from __future__ import annotations

import argparse
import csv
import io
from pathlib import Path

__all__ = ["HELP", "PROFILE_FOLDER", "HITS_FILE", "add_args", "main"]

HELP = "search a FASTA database with the HMM profiles of a build_no_seq output"

#: Folder of the profiles inside a build_no_seq output folder.
PROFILE_FOLDER = "hmm_profiles"
#: The ranked hits written to the output folder.
HITS_FILE = "hits.csv"
#: Hits printed per profile.
_PRINTED_PER_PROFILE = 3


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-i", "--input-dir", required=True, help="output folder of build_no_seq")
    parser.add_argument("-f", "--fasta", required=True, help="sequence database (FASTA)")
    parser.add_argument("-o", "--output-dir", required=True, help="folder for the ranked hits")
    parser.add_argument(
        "-E", "--max-evalue", type=float, default=10.0, help="report hits up to this E-value"
    )


def main(args: argparse.Namespace) -> int:
    from ..atomic import output_folder, write_bytes_atomic
    from ..thread.profiles import read_profiles, search_profiles
    from ..sequences import read_fasta

    profiles = read_profiles(Path(args.input_dir) / PROFILE_FOLDER)
    database = read_fasta(args.fasta)
    out = output_folder(args.output_dir)
    hits = search_profiles(profiles, database, max_evalue=args.max_evalue)

    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["profile", "target", "bits", "evalue", "rank"])
    for hit in hits:
        writer.writerow([hit.profile, hit.target, f"{hit.bits:.1f}", f"{hit.evalue:.3g}", hit.rank])
    path = write_bytes_atomic(out / HITS_FILE, text.getvalue().encode())

    print(
        f"{len(profiles)} profiles against {len(database)} sequences: {len(hits)} hits "
        f"(E <= {args.max_evalue:g}) written to {path}"
    )
    for hmm in profiles:
        best = [hit for hit in hits if hit.profile == hmm.name][:_PRINTED_PER_PROFILE]
        listed = ", ".join(
            f"{hit.target} (E = {hit.evalue:.2g}, {hit.bits:.1f} bits)" for hit in best
        )
        print(f"  {hmm.name}: {listed or 'no hits'}")
    return 0
