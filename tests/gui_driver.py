"""Drives the real cryobuild panel in PyMOL's GUI for ``tests/test_gui.py`` (not a test module).

Run as ``python -m pymol -q gui_driver.py`` on a virtual screen with the environment variable
``CRYOBUILD_GUI_TEST`` naming a JSON file of settings (map, fasta, map2, results). It clicks
through the issue-18 session -- build; a second build stopped mid-way; accept; rebuild a region
of the threaded model; build into another map; close the panel during a build -- and writes
what it saw to the results file after each step, then quits PyMOL.
"""

import json
import os
import time
import traceback

from pymol import cmd, gui
from pymol.Qt import QtCore

import cryobuild_pymol
from cryobuild_pymol import panel as panel_module
from cryobuild_pymol.bridge import get_bridge

SETTINGS = json.loads(open(os.environ["CRYOBUILD_GUI_TEST"]).read())
RESULTS = {"steps": []}
ENDED = []
POLL_MS = 100


def save():
    with open(SETTINGS["results"], "w") as handle:
        json.dump(RESULTS, handle, indent=1)


def finish(error=None):
    if error:
        RESULTS["error"] = error
    save()
    cmd.quit()


def when(condition, then, timeout=None):
    """Call ``then()`` once ``condition()`` holds (polled on the GUI thread)."""
    deadline = time.monotonic() + (timeout or SETTINGS["step_timeout"])

    def poll():
        try:
            if condition():
                then()
                return
        except Exception:
            finish(traceback.format_exc())
            return
        if time.monotonic() > deadline:
            finish(f"timed out before {then.__name__}")
            return
        QtCore.QTimer.singleShot(POLL_MS, poll)

    QtCore.QTimer.singleShot(POLL_MS, poll)


def step(_step, **seen):
    RESULTS["steps"].append(_step)
    RESULTS[_step] = seen
    save()


def keys(model):
    return sorted([c, int(n)] for c, n in zip(model.chain_id.tolist(), model.residue_number.tolist()))


cryobuild_pymol.__init_plugin__()
panel = cryobuild_pymol.open_panel(map_path=SETTINGS["map"], fasta_path=SETTINGS["fasta"])
panel.jobEnded.connect(lambda job_id, outcome: ENDED.append(outcome))
bridge = get_bridge()
window = gui.get_qtwindow()


def view():
    return bridge.views["cryobuild_model"]


def opened():
    step("opened", window=[window.width(), window.height()], viewport=list(cmd.get_viewport()),
         objects=cmd.get_names("objects"), map=panel.map_combo.currentText(),
         sequence=panel.sequence_status.text())
    panel.rounds_spin.setValue(2)
    panel.build_button.click()
    when(lambda: len(ENDED) == 1, built)


def built():
    session = view().session
    step("build", outcome=ENDED[-1], keys=keys(session.model), partial=session.state.partial,
         threaded=sorted(session.state.chain_sequences),
         ca_shown="cryobuild_ca" in cmd.get_names("objects", enabled_only=1),
         progress=panel.progress.value(), objects=cmd.get_names("objects"))
    panel.build_button.click()  # a second build over the finished model: stop it mid-way
    when(lambda: view().last_round is not None, stop)


def stop():
    RESULTS["stopping_keeps_model"] = bool(panel.job.keeps_model)
    panel.build_button.click()
    when(lambda: len(ENDED) == 2, stopped)


def stopped():
    session = view().session
    step("stop", outcome=ENDED[-1], keys=keys(session.model), objects=cmd.get_names("objects"),
         log=panel.log_view.toPlainText().splitlines()[-3:])
    model = session.model
    chain = max(model.chains(), key=lambda c: int((model.chain_id == c).sum()))
    numbers = sorted(model.residue_number[model.chain_id == chain].tolist())
    panel.selection_edit.setText(f"cryobuild_model and chain {chain} and resi {numbers[0]}-{numbers[9]}")
    panel.accept_button.click()
    step("accept", accepted=[list(k) for k in session.accepted_keys()])
    # a region of a threaded chain, past the accepted residues
    threaded = [c for c in model.chains() if c in session.state.chain_sequences] or [chain]
    target = max(threaded, key=lambda c: int((model.chain_id == c).sum()))
    numbers = sorted(model.residue_number[model.chain_id == target].tolist())
    middle = numbers[len(numbers) // 2:len(numbers) // 2 + 10]
    region = [[target, n] for n in middle]
    RESULTS["region"] = region
    RESULTS["before_rebuild"] = keys(session.model)
    panel.selection_edit.setText(f"cryobuild_model and chain {target} and resi {middle[0]}-{middle[-1]}")
    panel.rebuild_button.click()
    when(lambda: len(ENDED) == 3, rebuilt)


def rebuilt():
    session, job = view().session, panel.job
    verdict = job.verdict
    step("rebuild", outcome=ENDED[-1], keys=keys(session.model),
         kept=verdict.kept if verdict else None, message=verdict.message if verdict else "",
         new_residues=verdict.new.residues if verdict else None,
         old_residues=verdict.old.residues if verdict else None,
         shown=cmd.count_atoms("cryobuild_model and name CA"),
         accepted=[list(k) for k in session.accepted_keys()])
    # save the model, and open it again as after a restart of PyMOL
    saved = os.path.join(os.path.dirname(SETTINGS["results"]), "saved.cif")
    panel.save_model(saved)
    panel.name_edit.setText("reopened")
    panel.open_model(saved)
    reopened = bridge.views["reopened"].session
    step("reopen", keys=keys(reopened.model), accepted=[list(k) for k in reopened.accepted_keys()],
         shown=cmd.count_atoms("reopened and name CA"), log=panel.log_view.toPlainText().splitlines()[-1])
    panel.name_edit.setText("cryobuild_model")
    other = panel.open_map(SETTINGS["map2"])
    panel.map_combo.refresh(select=other)
    panel.rounds_spin.setValue(1)
    panel.build_button.click()
    RESULTS["other_job_keeps_model"] = bool(panel.job.keeps_model)
    when(lambda: len(ENDED) == 4, other_map)


def other_map():
    name = panel.name_edit.text()
    other = bridge.views[name]
    step("other_map", outcome=ENDED[-1], name=name, map=other.map_name,
         accepted=len(other.session.accepted_keys()), residues=other.session.model.num_residues,
         first_accepted=len(view().session.accepted_keys()))
    panel.build_button.click()  # one more build, then close the panel while it runs
    job = panel.job
    when(lambda: job._fraction > 0.05, lambda: close(job))


def close(job):
    closed = time.monotonic()
    panel_module._container.close()  # as the dock's close button
    when(lambda: job.done, lambda: closed_panel(job, closed))


def closed_panel(job, closed):
    step("close", outcome=job.outcome, seconds=time.monotonic() - closed)
    finish()


when(lambda: panel.ready, opened, timeout=SETTINGS["step_timeout"])
