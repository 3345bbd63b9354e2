"""``cryobuild build``: map + sequences -> a threaded, relaxed atomic model."""

HELP = "build a model into a map from its sequence(s)"


def add_args(parser):
    parser.add_argument("-v", "--map", required=True, help="map file (MRC/CCP4)")
    parser.add_argument("-f", "--fasta", required=True, help="FASTA file of the chains' sequences")
    parser.add_argument("-o", "--output-dir", required=True, help="folder for the outputs")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    parser.add_argument("--mask", default=None, help="mask map restricting the build")
    parser.add_argument("--rounds", type=int, default=3, help="recycling rounds (default 3)")
    parser.add_argument("--threader", choices=["hmm", "structgen"], default="hmm")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def main(args) -> int:
    from ..maps import read_map
    from ..sequences import read_fasta
    from .pending import not_yet

    read_map(args.map)
    read_fasta(args.fasta)
    return not_yet("build", "the trained graph network builder")
