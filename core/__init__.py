"""cryobuild: automated atomic model building of proteins into cryo-EM density maps.

Importing the package is cheap and changes nothing in the process: submodules (and torch)
are imported only when used.
"""

__version__ = "0.1.0"
