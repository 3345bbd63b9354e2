"""PyMOL commands: every panel action is also a scriptable command (STYLE 2.12).

The commands convert their own string arguments and raise `pymol.CmdException` with a
readable message for anything the user can fix. With PyMOL's Qt GUI running, a build runs in
the background and the panel's timer shows it as it goes (the panel takes it on: progress and
Stop), and the console gets one line when it ends; without a GUI (``pymol -c``, scripts) the
command runs the job in a worker and applies its events in the calling thread as they arrive,
returning when the job ends (Ctrl-C cancels it).
"""

from __future__ import annotations

import logging
import os

from pymol import CmdException, cmd as _cmd

from .bridge import DEFAULT_MODEL, finish_line, get_bridge, input_warnings, install_quit_hook

__all__ = [
    "cryobuild_accept",
    "cryobuild_unaccept",
    "cryobuild_remove",
    "cryobuild_open",
    "cryobuild_save",
    "cryobuild_assign",
    "cryobuild_build",
    "cryobuild_cancel",
    "cryobuild_prune",
    "cryobuild_rebuild",
    "cryobuild_swap",
    "cryobuild_undo",
    "register",
]

#: Seconds without any event after which a headless command stops waiting (a hung job).
HEADLESS_EVENT_TIMEOUT = 600.0

#: The engine logs its warnings for hosts that collect logs; in PyMOL they reach the user as
#: job events (the console, the panel), so only its errors (an internal error's traceback) go
#: to stderr, and logging's last-resort handler does not print the warnings a second time.
_ENGINE_LOG = logging.StreamHandler()
_ENGINE_LOG.setLevel(logging.ERROR)


def _readable(err: BaseException) -> CmdException:
    return CmdException(f"cryobuild: {err}")


def _gui_active() -> bool:
    """True when a Qt timer is pumping the bridge (PyMOL's Qt window, or an open panel)."""
    try:
        from . import panel
    except ImportError:
        return False
    return panel.pump_running()


def _whole_number(value, what: str) -> int:
    """A command's string argument as an int, or a readable `CmdException`."""
    try:
        return int(value)
    except ValueError:
        raise CmdException(f"cryobuild: {what} must be a whole number, got {value!r}") from None


def _say(message: str, quiet: int) -> None:
    if not quiet:
        print(f" cryobuild: {message}")


def _run_here(bridge, view, job, quiet: int) -> None:
    """Apply ``job``'s events as they arrive (headless): returns when it ends."""
    failure = []

    def drain():
        for event in job.events(timeout=HEADLESS_EVENT_TIMEOUT):
            bridge.apply(view, event)
            _report(view, event, quiet)
            if event.kind == "failed":
                failure.append(event.message)

    try:
        drain()
    except KeyboardInterrupt:
        job.cancel()
        drain()
    except TimeoutError as err:
        job.cancel()
        raise _readable(err) from None
    if failure:
        raise CmdException(f"cryobuild: {job.kind} failed: {failure[0]}")


def _job_on_model(name: str, start, message: str, quiet: int) -> str:
    """Start a job on model object ``name`` with ``start(bridge)``, say ``message``, and run it
    here when there is no GUI; returns the job's id."""
    from cryobuild.errors import CryobuildError

    bridge = get_bridge()
    try:
        background = _gui_active()
        job = start(bridge)
    except CryobuildError as err:
        raise _readable(err) from None
    _say(f"{job.id}: {message}", quiet)
    if not background:
        _run_here(bridge, bridge.view(name), job, quiet)
    return job.id


def _report(view, event, quiet: int) -> None:
    if event.kind in ("stage", "started", "finished"):
        return
    if event.kind == "failed":
        return  # raised as the command's error
    verdict = getattr(view.job, "verdict", None)
    if event.kind == "warning" and verdict is not None and event.message == verdict.message:
        return  # the finish line gives the verdict
    line = finish_line(view, event)
    _say(line if line is not None else f"{event.kind}: {event.message}", quiet)


def _sequences_from(fasta: str):
    """Sequences from a FASTA file path, or FASTA/plain sequence text given inline; none for
    an empty argument (a build without sequence)."""
    from cryobuild.sequences import parse_fasta, read_fasta

    fasta = fasta.strip()
    if not fasta:
        return []
    if os.path.isfile(os.path.expanduser(fasta)):
        return read_fasta(os.path.expanduser(fasta))
    if os.sep in fasta or fasta.lower().endswith((".fa", ".fasta", ".faa", ".seq")):
        raise CmdException(f"cryobuild: {fasta}: no such FASTA file")
    text = fasta if fasta.startswith(">") else f">sequence\n{fasta}"
    return parse_fasta(text, "<command argument>")


def cryobuild_build(map, fasta="", name=DEFAULT_MODEL, rounds=3, device="auto", resolution=0.0,
                    quiet=0, *, _self=_cmd):
    '''
DESCRIPTION

    Build an atomic model of a protein into a map object: Cα candidates
    appear first (object cryobuild_ca, hidden at the end), then each
    round's model replaces the model object; residues are coloured by
    confidence (B-factor 0-100, red -> yellow -> blue). When the model
    object already holds a finished model, the rounds appear as
    <name>_new instead, and the new model replaces the old one only if
    it is better (at least as many residues, more total confidence, no
    worse fit to the map); otherwise it stays as <name>_new
    (cryobuild_swap puts it in). A model object belongs to its map: a
    build into another map goes into <name>_<map>. Without a sequence
    the build leaves its chains unassigned and saves their HMM profiles
    (as cryobuild build_no_seq does). With the Qt GUI the build runs in
    the background, shown in the panel (see cryobuild_cancel), and the
    console says when it ends; without it the command returns when the
    build has finished. One build at a time per map.

USAGE

    cryobuild_build map [, fasta [, name [, rounds [, device [, resolution ]]]]]

ARGUMENTS

    map = str: map object loaded in PyMOL

    fasta = str: FASTA file with the chains' sequences, or a sequence
    {default: none: build without sequence}

    name = str: name of the model object {default: cryobuild_model}

    rounds = int: graph-network rounds, 1-20 {default: 3}

    device = str: auto, cpu or cuda {default: auto}

    resolution = float: the map's resolution in Å, e.g. from its EMDB
    entry; rebuilds and assignments in the model read the map at it too
    {default: 0: estimated from the map's spectrum}

EXAMPLE

    load emd_1234.map, emd
    cryobuild_build emd, chains.fasta, rounds=2, resolution=3.4

SEE ALSO

    cryobuild_cancel, cryobuild_prune, cryobuild_accept, cryobuild_rebuild, cryobuild_swap
    '''
    from cryobuild.errors import CryobuildError

    quiet = int(quiet)
    rounds = _whole_number(rounds, "rounds")
    try:
        resolution = float(resolution) or None
    except ValueError:
        raise CmdException(f"cryobuild: resolution must be a number of Å (0: estimated), got "
                           f"{resolution!r}") from None
    bridge = get_bridge()
    requested = str(name).strip() or DEFAULT_MODEL
    try:
        with input_warnings() as said:
            sequences = _sequences_from(str(fasta))
        for message in said:
            print(f" cryobuild: warning: {message}")
        background = _gui_active()
        job = bridge.start_build(str(map), sequences, rounds=rounds, name=requested, device=str(device),
                                 resolution=resolution)
    except CryobuildError as err:
        raise _readable(err) from None
    view = bridge.view_of(job)
    if view.name != requested:
        _say(f"{requested} holds a model of map {bridge.views[requested].map_name}, and accepted "
             f"residues belong to their map: building into {view.name}", quiet)
    what = f"{len(sequences)} sequence(s)" if sequences else \
        "without sequence (chains unassigned, as build_no_seq)"
    apart = (f"; {view.name} stays until a better model is done, its rounds appear as {view.new_name}"
             if job.keeps_model else "")
    _say(f"{job.id}: building {what} into {map} -> {view.name}{apart}", quiet)
    if not background:
        _run_here(bridge, view, job, quiet)
    return job.id


def cryobuild_cancel(name="", quiet=0, *, _self=_cmd):
    '''
DESCRIPTION

    Stop the running cryobuild job (of one model, or all). The model
    keeps its last finished round.

USAGE

    cryobuild_cancel [ name ]

ARGUMENTS

    name = str: model object whose job to stop {default: all jobs}

SEE ALSO

    cryobuild_build, cryobuild_rebuild
    '''
    asked = get_bridge().cancel(str(name).strip() or None)
    _say(f"asked {asked} job(s) to stop" if asked else "no job is running", int(quiet))
    return asked


def cryobuild_prune(name=DEFAULT_MODEL, threshold=50.0, quiet=0, *, _self=_cmd):
    '''
DESCRIPTION

    Remove the residues of a cryobuild model whose confidence is below a
    threshold (accepted residues stay). cryobuild_undo brings them back.

USAGE

    cryobuild_prune name, threshold

ARGUMENTS

    name = str: model object {default: cryobuild_model}

    threshold = float: confidence 0-100 {default: 50}

SEE ALSO

    cryobuild_accept, cryobuild_undo
    '''
    from cryobuild.errors import CryobuildError

    try:
        threshold = float(threshold)
    except ValueError:
        raise CmdException(f"cryobuild: the threshold must be a number 0-100, got {threshold!r}") from None
    try:
        count = get_bridge().prune(threshold, str(name))
    except CryobuildError as err:
        raise _readable(err) from None
    _say(f"pruned {count} residues below {threshold:g} from {name}", int(quiet))
    return count


def cryobuild_accept(selection="sele", name=DEFAULT_MODEL, quiet=0, *, _self=_cmd):
    '''
DESCRIPTION

    Accept the residues of a cryobuild model in a selection: later builds
    and rebuilds keep them as they are, and prune passes over them. They
    are shown as sticks with green carbons.

USAGE

    cryobuild_accept selection [, name ]

ARGUMENTS

    selection = str: atom selection {default: sele}

    name = str: model object {default: cryobuild_model}

SEE ALSO

    cryobuild_unaccept, cryobuild_prune, cryobuild_rebuild, cryobuild_undo
    '''
    added = _on_selection(lambda bridge: bridge.accept(str(selection), str(name)), selection)
    _say(f"accepted {added} more residues of {name}", int(quiet))
    return added


def cryobuild_unaccept(selection="sele", name=DEFAULT_MODEL, quiet=0, *, _self=_cmd):
    '''
DESCRIPTION

    Clear the accepted flag of the residues of a cryobuild model in a
    selection: later builds, rebuilds and prunes treat them as any other
    residue again, and the chains they belong to can be assigned.

USAGE

    cryobuild_unaccept selection [, name ]

ARGUMENTS

    selection = str: atom selection {default: sele}

    name = str: model object {default: cryobuild_model}

SEE ALSO

    cryobuild_accept, cryobuild_undo
    '''
    removed = _on_selection(lambda bridge: bridge.accept(str(selection), str(name), accepted=False),
                            selection)
    _say(f"unaccepted {removed} residues of {name}", int(quiet))
    return removed


def cryobuild_remove(selection="sele", name=DEFAULT_MODEL, quiet=0, *, _self=_cmd):
    '''
DESCRIPTION

    Remove (prune) the residues of a cryobuild model in a selection, e.g. a
    piece built into density that is not protein. Accepted residues cannot
    be removed (unaccept them first); cryobuild_undo brings them back.

USAGE

    cryobuild_remove selection [, name ]

ARGUMENTS

    selection = str: atom selection {default: sele}

    name = str: model object {default: cryobuild_model}

SEE ALSO

    cryobuild_prune, cryobuild_unaccept, cryobuild_undo
    '''
    count = _on_selection(lambda bridge: bridge.remove(str(selection), str(name)), selection)
    _say(f"removed {count} residues of {name}", int(quiet))
    return count


def cryobuild_open(file, map="", fasta="", name=DEFAULT_MODEL, quiet=0, *, _self=_cmd):
    '''
DESCRIPTION

    Open a model file (mmCIF or PDB) as a cryobuild model, e.g. one saved
    in an earlier PyMOL session: it can then be accepted, pruned, removed
    and rebuilt like a model built here. Confidences are read from the Cα
    B-factors (what cryobuild writes there). A model object that holds
    accepted residues is not replaced.

USAGE

    cryobuild_open file [, map [, fasta [, name ]]]

ARGUMENTS

    file = str: model file

    map = str: map object that rebuilds use {default: none}

    fasta = str: FASTA file with the chains' sequences, or a sequence
    {default: the model's own}

    name = str: model object {default: cryobuild_model}

SEE ALSO

    cryobuild_save, cryobuild_build, cryobuild_rebuild, cryobuild_accept
    '''
    from cryobuild.errors import CryobuildError

    try:
        sequences = _sequences_from(str(fasta)) or None
        view = get_bridge().open_model(os.path.expanduser(str(file)), name=str(name),
                                       sequences=sequences, map_name=str(map))
    except CryobuildError as err:
        raise _readable(err) from None
    count = view.session.model.num_residues
    _say(f"opened {file} as {view.name}: {count} residues", int(quiet))
    return count


def cryobuild_save(file, name=DEFAULT_MODEL, quiet=0, *, _self=_cmd):
    '''
DESCRIPTION

    Save a cryobuild model (its visible residues) as mmCIF or PDB, by the
    file's suffix, atomically. An mmCIF file names the accepted residues,
    so that cryobuild_open accepts them again; a PDB file cannot.

USAGE

    cryobuild_save file [, name ]

ARGUMENTS

    file = str: .cif or .pdb file

    name = str: model object {default: cryobuild_model}

SEE ALSO

    cryobuild_open
    '''
    from cryobuild.errors import CryobuildError

    try:
        written = get_bridge().save(os.path.expanduser(str(file)), str(name))
    except CryobuildError as err:
        raise _readable(err) from None
    _say(f"saved {name} to {written}", int(quiet))
    return str(written)


def _on_selection(action, selection) -> int:
    """``action(bridge)`` (an edit of ``selection``'s residues) with its errors, and PyMOL's
    for a selection it cannot parse, made readable."""
    from cryobuild.errors import CryobuildError

    try:
        return action(get_bridge())
    except CryobuildError as err:
        raise _readable(err) from None
    except Exception as err:  # a selection PyMOL cannot parse
        if type(err).__name__ in ("CmdException", "QuietException"):
            raise CmdException(f"cryobuild: bad selection {selection!r}") from None
        raise


def cryobuild_rebuild(selection="sele", name=DEFAULT_MODEL, rounds=3, quiet=0, *, _self=_cmd):
    '''
DESCRIPTION

    Rebuild the residues of a cryobuild model in a selection, into the
    map it was built in; accepted residues in the region stay. The new
    residues are threaded within the sequence window between the
    residues flanking the selection, and replace the old ones only if
    they are better (more residues of known type, or as many with more
    total confidence or a better fit to the map; up to a tenth fewer
    where they fit much better than the old ones): the console says
    which were kept. New residues not kept stay as <name>_new
    (cryobuild_swap puts them in).

USAGE

    cryobuild_rebuild selection [, name [, rounds ]]

ARGUMENTS

    selection = str: atom selection {default: sele}

    name = str: model object {default: cryobuild_model}

    rounds = int: graph-network rounds {default: 3, as a build's}

SEE ALSO

    cryobuild_build, cryobuild_accept, cryobuild_cancel
    '''
    rounds = _whole_number(rounds, "rounds")
    return _job_on_model(str(name), lambda bridge: bridge.start_rebuild(
        str(selection), name=str(name), rounds=rounds), f"rebuilding {selection} of {name}", int(quiet))


def cryobuild_assign(chain, rank=1, name=DEFAULT_MODEL, quiet=0, *, _self=_cmd):
    '''
DESCRIPTION

    Assign an unassigned chain (UNK residues) of a cryobuild model to a
    place in a sequence that its last build offered: the orange labels
    name each chain's best place, unassigned_placements.csv in the build
    folder lists up to three per chain. The chain's residues take the
    place's numbers and residue types, get side chains, are relaxed, and
    join a chain of that sequence whose numbers they leave free. The
    build could not tell such a place from chance: check it against the
    density (cryobuild_undo takes it back).

USAGE

    cryobuild_assign chain [, rank [, name ]]

ARGUMENTS

    chain = str: the unassigned chain's ID

    rank = int: which of the chain's placements, 1 the best {default: 1}

    name = str: model object {default: cryobuild_model}

SEE ALSO

    cryobuild_build, cryobuild_rebuild, cryobuild_undo
    '''
    rank = _whole_number(rank, "rank")
    return _job_on_model(str(name), lambda bridge: bridge.start_assign(
        str(chain), rank=rank, name=str(name)), f"assigning chain {chain} of {name}", int(quiet))


def cryobuild_swap(name=DEFAULT_MODEL, quiet=0, *, _self=_cmd):
    '''
DESCRIPTION

    Put the model of a cryobuild model object's last job in place, when
    that job kept the old model because the new one was not better (the
    new one is shown as <name>_new). cryobuild_undo swaps back.

USAGE

    cryobuild_swap [ name ]

ARGUMENTS

    name = str: model object {default: cryobuild_model}

SEE ALSO

    cryobuild_build, cryobuild_rebuild, cryobuild_undo
    '''
    from cryobuild.errors import CryobuildError

    try:
        message = get_bridge().swap(str(name))
    except CryobuildError as err:
        raise _readable(err) from None
    _say(message, int(quiet))
    return message


def cryobuild_undo(name=DEFAULT_MODEL, quiet=0, *, _self=_cmd):
    '''
DESCRIPTION

    Undo the last change to a cryobuild model (accept, prune, build).

USAGE

    cryobuild_undo [ name ]

SEE ALSO

    cryobuild_accept, cryobuild_prune
    '''
    from cryobuild.errors import CryobuildError

    try:
        action = get_bridge().undo(str(name))
    except CryobuildError as err:
        raise _readable(err) from None
    _say(f"undid: {action}", int(quiet))
    return action


_COMMANDS = {
    "cryobuild_build": cryobuild_build,
    "cryobuild_cancel": cryobuild_cancel,
    "cryobuild_prune": cryobuild_prune,
    "cryobuild_accept": cryobuild_accept,
    "cryobuild_unaccept": cryobuild_unaccept,
    "cryobuild_remove": cryobuild_remove,
    "cryobuild_open": cryobuild_open,
    "cryobuild_save": cryobuild_save,
    "cryobuild_assign": cryobuild_assign,
    "cryobuild_rebuild": cryobuild_rebuild,
    "cryobuild_swap": cryobuild_swap,
    "cryobuild_undo": cryobuild_undo,
}


def register(_self=_cmd) -> None:
    """Add the commands to PyMOL (with argument completion), make meshes safe to hide, and
    have ``quit`` remove the plugin's temporary folders."""
    # Hiding a shader-drawn mesh segfaults under software OpenGL (STACK_NOTES).
    _self.set("mesh_use_shader", 0)
    install_quit_hook(_self)
    logging.getLogger("cryobuild").addHandler(_ENGINE_LOG)  # the same handler: added once
    for name, function in _COMMANDS.items():
        _self.extend(name, function)
    from pymol.shortcut import Shortcut

    maps = [lambda: Shortcut(_self.get_names_of_type("object:map")), "map object", ", "]
    selections = _self.auto_arg[0].get("zoom")
    _self.auto_arg[0]["cryobuild_build"] = maps
    if selections is not None:
        _self.auto_arg[0]["cryobuild_accept"] = selections
        _self.auto_arg[0]["cryobuild_unaccept"] = selections
        _self.auto_arg[0]["cryobuild_remove"] = selections
        _self.auto_arg[0]["cryobuild_rebuild"] = selections
