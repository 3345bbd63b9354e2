"""``cryobuild gui``: start PyMOL with the cryobuild panel (and files, if given)."""

HELP = "start PyMOL with the cryobuild plugin loaded"


def add_args(parser):
    parser.add_argument("map", nargs="?", help="map to load")
    parser.add_argument("fasta", nargs="?", help="FASTA to put in the panel")


def main(args) -> int:
    from .pending import not_yet

    return not_yet("gui", "the PyMOL plugin")
