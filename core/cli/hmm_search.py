"""``cryobuild hmm_search``: search a sequence database with a build's HMM profiles."""

HELP = "search a FASTA database with the HMM profiles of a build_no_seq output"


def add_args(parser):
    parser.add_argument("-i", "--input-dir", required=True, help="output folder of build_no_seq")
    parser.add_argument("-f", "--fasta", required=True, help="sequence database (FASTA)")
    parser.add_argument("-o", "--output-dir", required=True, help="folder for the ranked hits")


def main(args) -> int:
    from .pending import not_yet

    return not_yet("hmm_search", "HMM profiles from build_no_seq")
