"""``cryobuild install-plugin``: register the plugin with the PyMOL of this environment."""

HELP = "register the cryobuild plugin with PyMOL"


def add_args(parser):
    parser.add_argument("--uninstall", action="store_true", help="remove the registration")


def main(args) -> int:
    from .pending import not_yet

    return not_yet("install-plugin", "the PyMOL plugin")
