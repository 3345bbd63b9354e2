"""The output folder of a build: locked, staged and swapped in, never lost on a write error."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time

import pytest

from cryobuild.build_folder import LOCK_FILE, RECORD_FILE, STAGING, BuildFolder
from cryobuild.errors import InputError, OutputError

#: A program that claims a folder and is killed holding it.
_KILLED_HOLDER = textwrap.dedent(
    """
    import os, signal, sys
    from cryobuild.build_folder import BuildFolder

    folder = BuildFolder.claim(sys.argv[1])
    (folder.staging / "rounds").mkdir()
    (folder.staging / "rounds" / "round_1.cif").write_text("killed")
    print(folder.build_id, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


def earlier_build(out):
    """An earlier build's outputs in ``out``, as a build saves them: five rounds, a model and a
    log (and the record of what it wrote)."""

    def write(destination):
        (destination / "rounds").mkdir()
        for index in range(1, 6):
            (destination / "rounds" / f"round_{index}.cif").write_text("earlier\n")
        for name in ("model.cif", "chains.csv", "build.log"):
            (destination / name).write_text("earlier\n")

    with BuildFolder.claim(out) as folder:
        folder.save(write)


def test_a_second_claim_is_refused_naming_the_first(tmp_path):
    with BuildFolder.claim(tmp_path / "out") as first:
        with pytest.raises(InputError, match=f"build {first.build_id} .pid {os.getpid()} on .*, "
                                             "started .*. is writing into this folder"):
            BuildFolder.claim(tmp_path / "out")
        holder = json.loads((tmp_path / "out" / LOCK_FILE).read_text())
        assert holder["build_id"] == first.build_id
    with BuildFolder.claim(tmp_path / "out"):  # released at the end of the block
        pass


def test_the_lock_of_a_killed_build_is_taken_over(tmp_path):
    out = tmp_path / "out"
    killed = subprocess.run([sys.executable, "-c", _KILLED_HOLDER, str(out)], capture_output=True,
                            text=True, timeout=60)
    assert killed.returncode < 0, killed.stderr  # killed by the signal
    assert json.loads((out / LOCK_FILE).read_text())["build_id"] == killed.stdout.strip()
    assert (out / STAGING / "rounds" / "round_1.cif").exists()
    with BuildFolder.claim(out) as folder:
        assert not (out / STAGING / "rounds").exists()
        assert json.loads((out / LOCK_FILE).read_text())["build_id"] == folder.build_id


def test_save_replaces_the_earlier_build_as_a_whole(tmp_path):
    out = tmp_path / "out"
    earlier_build(out)
    (out / "notes.txt").write_text("the user's own\n")

    def write(destination):
        (destination / "rounds").mkdir()
        (destination / "rounds" / "round_1.cif").write_text("new\n")
        (destination / "model.cif").write_text("new\n")

    with BuildFolder.claim(out) as folder:
        assert (out / "model.cif").read_text() == "earlier\n"  # untouched while the build runs
        assert folder.save(write) == out
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == [
        RECORD_FILE, "model.cif", "notes.txt", "rounds", "rounds/round_1.cif"]
    assert folder.kept == []


def test_a_model_changed_since_its_build_is_kept_not_replaced(tmp_path):
    """A model edited in place after its build (or put there by hand) is kept under a new name
    beside the new outputs, and the build says so; an unchanged one is replaced."""
    out = tmp_path / "out"
    earlier_build(out)
    (out / "model.cif").write_text("refined in Coot\n")
    os.utime(out / "model.cif", (0, 0))
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(0))

    def write(destination):
        for name in ("model.cif", "model_raw.cif"):
            (destination / name).write_text("new\n")

    with BuildFolder.claim(out) as folder:
        folder.save(write)
    kept = out / f"model.changed-{stamp}.cif"
    assert kept.read_text() == "refined in Coot\n"
    assert folder.kept == [(out / "model.cif", kept)]
    assert folder.kept_notices() == [f"{out / 'model.cif'} had changed since the build that "
                                     f"wrote it: kept as {kept.name}"]
    assert (out / "model.cif").read_text() == "new\n"
    # the new outputs are recorded: rebuilding replaces them, and the kept model stays
    with BuildFolder.claim(out) as folder:
        folder.save(write)
    assert folder.kept == [] and kept.exists()
    # a model no build recorded (copied in by hand) is kept too, under a free name
    (out / "model_raw.cif").write_text("by hand\n")
    os.utime(out / "model_raw.cif", (0, 0))
    (out / f"model_raw.changed-{stamp}.cif").write_text("taken\n")
    with BuildFolder.claim(out) as folder:
        folder.save(write)
    assert (out / f"model_raw.changed-{stamp}-2.cif").read_text() == "by hand\n"


def test_a_failed_build_leaves_the_earlier_outputs_and_no_new_folder(tmp_path):
    out = tmp_path / "out"
    earlier_build(out)
    with pytest.raises(RuntimeError):
        with BuildFolder.claim(out):
            raise RuntimeError("the build failed")
    assert sorted(p.name for p in out.iterdir()) == [
        RECORD_FILE, "build.log", "chains.csv", "model.cif", "rounds"]
    with pytest.raises(RuntimeError):
        with BuildFolder.claim(tmp_path / "new"):
            raise RuntimeError("the build failed")
    assert not (tmp_path / "new").exists()


def test_a_write_error_saves_the_outputs_elsewhere(tmp_path, monkeypatch):
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    out = tmp_path / "out"
    earlier_build(out)

    def write(destination):
        if destination.parent == out:
            raise OSError(28, "No space left on device", str(destination / "model.cif"))
        (destination / "model.cif").write_text("new\n")

    with BuildFolder.claim(out) as folder:
        with pytest.raises(OutputError) as info:
            folder.save(write)
    [fallback] = (tmp_path / "tmp").iterdir()
    assert str(info.value) == (f"{out}: cannot write the outputs (No space left on device: "
                               f"{out / STAGING / 'model.cif'}); they are in {fallback} instead")
    assert fallback.name.startswith(f"cryobuild-{folder.build_id}-")
    assert (fallback / "model.cif").read_text() == "new\n"
    assert (out / "model.cif").read_text() == "earlier\n"


@pytest.mark.parametrize("entry, problem", [
    ("rounds", "is a file where the build writes a folder"),
    ("model.cif/", "is a folder where the build writes a file"),
    (f"{STAGING}/", "not a folder of cryobuild's"),
])
def test_an_output_in_the_way_is_refused_before_the_build(tmp_path, entry, problem):
    out = tmp_path / "out"
    out.mkdir()
    if entry.endswith("/"):
        (out / entry).mkdir()
        (out / entry / "mine.txt").write_text("the user's own\n")
    else:
        (out / entry).write_text("the user's own\n")
    with pytest.raises(InputError, match=f"{out / entry.rstrip('/')}: {problem}"):
        BuildFolder.claim(out)
    assert sorted(p.name for p in out.iterdir()) == [entry.rstrip("/")]


def test_an_earlier_model_that_cannot_be_read_is_kept(tmp_path, monkeypatch):
    import cryobuild.build_folder as build_folder

    out = tmp_path / "out"
    earlier_build(out)  # its model as recorded: only the failed read sets it apart
    sha256 = build_folder._sha256

    def unreadable(path):
        if path == out / "model.cif":
            raise PermissionError(13, "Permission denied", str(path))
        return sha256(path)

    monkeypatch.setattr(build_folder, "_sha256", unreadable)

    def write(destination):
        (destination / "model.cif").write_text("new\n")

    with BuildFolder.claim(out) as folder:
        folder.save(write)
    [(_, kept)] = folder.kept
    assert kept.read_text() == "earlier\n"
    assert (out / "model.cif").read_text() == "new\n"


def test_read_log_tells_a_missing_log_from_one_it_cannot_read(tmp_path):
    from cryobuild.build_folder import BUILD_LOG, read_log

    with pytest.raises(FileNotFoundError):
        read_log(tmp_path)
    (tmp_path / BUILD_LOG).write_text('{"resolution": 3.4}\n')
    assert read_log(tmp_path) == {"resolution": 3.4}
    for text in ("{truncated", "[3.4]"):
        (tmp_path / BUILD_LOG).write_text(text)
        with pytest.raises(InputError, match="build.log: cannot be read"):
            read_log(tmp_path)
