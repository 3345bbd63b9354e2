"""cryobuild's PyMOL plugin (package ``cryobuild_pymol``): a thin view over `cryobuild.engine`."""
