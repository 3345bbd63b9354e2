"""``cryobuild build_no_seq``: build without a sequence and write HMM profiles."""

HELP = "build a model without a sequence; writes hmm_profiles/ for hmm_search"


def add_args(parser):
    parser.add_argument("-v", "--map", required=True, help="map file (MRC/CCP4)")
    parser.add_argument("-o", "--output-dir", required=True, help="folder for the outputs")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    parser.add_argument("--mask", default=None, help="mask map restricting the build")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def main(args) -> int:
    from .pending import not_yet

    return not_yet("build_no_seq", "the trained graph network builder")
