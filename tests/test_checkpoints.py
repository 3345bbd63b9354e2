"""The checkpoints the package installs are the ones its code loads by name."""

import ast
from pathlib import Path

from cryobuild.bench.real import DEFAULT_PAIRS
from cryobuild.checkpoints import BUNDLED
from cryobuild.thread.structgen import THREADING_CHECKPOINT

REPOSITORY = Path(__file__).resolve().parents[1]


def _setup_bundled() -> tuple:
    """setup.py's ``BUNDLED`` (read, not run: setup.py calls setup())."""
    tree = ast.parse((REPOSITORY / "setup.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and [t.id for t in node.targets] == ["BUNDLED"]:
            return ast.literal_eval(node.value)
    raise AssertionError("setup.py defines no BUNDLED")


def test_setup_installs_the_checkpoints_the_code_loads():
    assert _setup_bundled() == BUNDLED
    # builds (pipeline.Networks), --threader structgen, the benchmarks' other fold, and the
    # defaults training resumes (train.gnn --no-sequence, train.structgen)
    loaded = {"detect", "gnn", THREADING_CHECKPOINT, "gnn_noseq", "structgen"}
    loaded |= {name for pair in DEFAULT_PAIRS for name in pair}
    assert loaded == set(BUNDLED)
    assert all((REPOSITORY / "weights" / f"{name}.pt").is_file() for name in BUNDLED)
