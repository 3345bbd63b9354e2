"""Installs the engine (core/ -> package ``cryobuild``), the PyMOL plugin
(plugin/ -> package ``cryobuild_pymol``), the trained weights as package data, and the
``cryobuild`` console script."""

from setuptools import setup

#: The checkpoints installed with the package: `cryobuild.checkpoints.BUNDLED` (a test keeps
#: the two lists equal; setup.py cannot import the package it installs).
BUNDLED = ("detect", "gnn", "gnn_noseq", "structgen", "structgen_typed", "detect_foldA", "gnn_foldA")

setup(
    name="cryobuild",
    version="0.1.0",
    description="Automated atomic model building of proteins into cryo-EM maps, inside PyMOL",
    python_requires=">=3.10",
    packages=[
        "cryobuild",
        "cryobuild.cli",
        "cryobuild.detect",
        "cryobuild.engine",
        "cryobuild.gnn",
        "cryobuild.structgen",
        "cryobuild.thread",
        "cryobuild.train",
        "cryobuild.bench",
        "cryobuild.weights",
        "cryobuild_pymol",
    ],
    package_dir={
        "cryobuild": "core",
        "cryobuild.cli": "core/cli",
        "cryobuild.detect": "core/detect",
        "cryobuild.engine": "core/engine",
        "cryobuild.gnn": "core/gnn",
        "cryobuild.structgen": "core/structgen",
        "cryobuild.thread": "core/thread",
        "cryobuild.train": "core/train",
        "cryobuild.bench": "core/bench",
        "cryobuild.weights": "weights",
        "cryobuild_pymol": "plugin",
    },
    package_data={
        "cryobuild": ["*.json"],
        # The checkpoints the code loads by name (`cryobuild.checkpoints.BUNDLED`); the other
        # files in weights/ are the records of runs not adopted (weights/MANIFEST.md), which a
        # checkout keeps and benchmarks take by path: installed too, they made the wheel
        # 414 MB instead of 110.
        "cryobuild.weights": [f"{name}.pt" for name in BUNDLED] + ["MANIFEST.md"],
    },
    install_requires=[
        # On a CPU-only machine pip takes the local CPU wheel of this version; on a CUDA
        # machine the same pin gives the CUDA build.
        "torch==2.13.0",
        "pymol-open-source==3.2.0a0",
        "PyQt5==5.15.11",
        "mrcfile>=1.5",
        "gemmi>=0.7",
        "numpy>=1.24",
        "scipy>=1.10",
        "pyhmmer>=0.12",
        "fair-esm==2.0.0",
        "tqdm>=4.60",
    ],
    # dask: builds on Dask workers (`build --scheduler`, `batch`), imported only by those.
    extras_require={"test": ["pytest>=8"], "dask": ["dask>=2024.1", "distributed>=2024.1"]},
    entry_points={"console_scripts": ["cryobuild = cryobuild.cli:main"]},
)
