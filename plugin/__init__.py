"""cryobuild's PyMOL plugin (package ``cryobuild_pymol``): a thin view over `cryobuild.engine`.

`__init_plugin__` registers the commands (`cryobuild_pymol.commands`) and, when PyMOL runs its
Qt GUI, the menu item Plugin -> cryobuild, which opens the panel (`cryobuild_pymol.panel`).
Nothing heavy is imported until the panel opens or a command runs (STYLE 2.10).

Registered with PyMOL by ``cryobuild install-plugin``; ``cryobuild gui`` starts PyMOL with it.
"""

MENU_LABEL = "cryobuild"

_initialised = False


def __init_plugin__(app=None):
    """PyMOL's plugin hook: add the commands, then the menu item if there is a Qt GUI."""
    global _initialised
    from . import commands

    commands.register()
    if _initialised:
        return
    _initialised = True
    try:
        from pymol.plugins import QtNotAvailableError, addmenuitemqt
    except ImportError:
        return
    try:
        addmenuitemqt(MENU_LABEL, open_panel)
    except QtNotAvailableError:
        pass  # PyMOL without its Qt GUI: the commands still work


def open_panel(map_path=None, fasta_path=None, model_path=None, resolution=None):
    """Open (or raise) the panel; optionally load a map file, put a FASTA file in it, open a
    model file into its model object and set the map's resolution (Å)."""
    from .panel import show_panel

    return show_panel(map_path=map_path, fasta_path=fasta_path, model_path=model_path,
                      resolution=resolution)
