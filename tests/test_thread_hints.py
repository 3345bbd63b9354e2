"""Where the final model's unassigned chains might go (`cryobuild.thread.hints`), and how right
an offered numbering is (`cryobuild.evaluate.offered_numbering`)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from cryobuild.build_outputs import aligned_runs, placements_csv, read_placements_csv
from cryobuild.errors import InputError
from cryobuild.evaluate import offered_numbering
from cryobuild.models import read_model
from cryobuild.residues import AA_ORDER, ATOM14_MASK, UNK_INDEX
from cryobuild.sequences import Sequence
from cryobuild.thread import hints
from cryobuild.thread.hints import MAX_HINT_EVALUE, MIN_HINT_LENGTH, unassigned_placements

from gnn_synth import noisy_probs


@pytest.fixture(scope="module")
def il2_final(il2_path):
    """A final model of il2's first 60 residues: chain A threaded (residues 1-30 of the
    model), chain B unassigned UNK (31-55, numbered 1-25 along the trace), chain C unassigned
    and too short (56-58); types right at 60%; the full sequence."""
    model = read_model(il2_path).take(np.arange(58))
    sequence = "".join(AA_ORDER[t] for t in model.aatype)
    rows = np.arange(58)
    chain = np.where(rows < 30, "A", np.where(rows < 55, "B", "C"))
    numbers = np.where(rows < 30, rows + 1, np.where(rows < 55, rows - 29, rows - 54))
    aatype = np.where(rows < 30, model.aatype, UNK_INDEX)
    mask = np.where((aatype == UNK_INDEX)[:, None], model.atom_mask & ATOM14_MASK[UNK_INDEX],
                    model.atom_mask)
    final = dataclasses.replace(model, chain_id=chain, residue_number=numbers, aatype=aatype,
                                atom_mask=mask, confidence=np.full(58, 80.0, np.float32),
                                entity_sequences={"A": sequence})
    probs = noisy_probs(model.aatype, 0.6, np.random.default_rng(3)).astype(np.float32)
    return final, probs, [Sequence("il2", sequence)], model


def test_an_unassigned_chain_is_offered_its_place_and_threaded_ones_none(il2_final):
    final, probs, sequences, _ = il2_final
    placements = unassigned_placements(final, probs, sequences)
    assert {p.chain_id for p in placements} == {"B"}  # A is threaded, C shorter than the least
    assert MIN_HINT_LENGTH > 3
    best = placements[0]
    assert best.rank == 1 and best.sequence == "il2"
    assert best.evalue < 1e-3 and best.chance_hits == pytest.approx(best.evalue)
    # the chain's residue k is the sequence's 30 + k
    assert best.first - best.chain_first == 30 and best.last - best.chain_last == 30
    assert best.aligned[0] == (best.chain_first, best.first)
    assert best.aligned[-1] == (best.chain_last, best.last)
    assert all(position - number == 30 for number, position in best.aligned)
    assert best.already_threaded == 0
    assert all(p.evalue <= MAX_HINT_EVALUE for p in placements)
    assert [p.rank for p in placements] == list(range(1, len(placements) + 1))
    # placed where chain A already is, the positions count as threaded
    where_a = dataclasses.replace(final, entity_sequences={"A": sequences[0].residues},
                                  residue_number=np.where(final.chain_id == "A",
                                                          final.residue_number + 30,
                                                          final.residue_number))
    assert unassigned_placements(where_a, probs, sequences)[0].already_threaded > 0
    text = placements_csv(placements)
    assert text.splitlines()[0].startswith("chain_id,rank,sequence,first,last")
    assert text.splitlines()[1].startswith(f"B,1,il2,{best.first},{best.last}")
    assert text.splitlines()[1].endswith(aligned_runs(best.aligned))


def test_aligned_pairs_are_written_as_runs():
    assert aligned_runs(((12, 58), (13, 59), (14, 60), (16, 61), (17, 63))) == "12-14:58-60 16:61 17:63"
    assert aligned_runs(()) == ""


def test_placements_read_back_as_written_and_a_foreign_table_is_refused(il2_final, tmp_path):
    final, probs, sequences, _ = il2_final
    placements = unassigned_placements(final, probs, sequences)
    path = tmp_path / "unassigned_placements.csv"
    path.write_text("# cryobuild build x\n" + placements_csv(placements))
    again = read_placements_csv(path)
    assert [p.aligned for p in again] == [p.aligned for p in placements]
    assert [(p.chain_id, p.rank, p.first, p.last) for p in again] == [
        (p.chain_id, p.rank, p.first, p.last) for p in placements]
    path.write_text("chain_id,rank\nB,first\n")
    with pytest.raises(InputError, match="not a table cryobuild wrote"):
        read_placements_csv(path)


def test_an_alignment_of_fewer_residues_than_a_chain_needs_is_no_place(il2_final, monkeypatch):
    """An alignment that holds a chain's residues in inserts but for one or two (inserts are
    cheap after long Cα steps) places nothing."""
    import cryobuild.thread.hints as hints

    final, probs, sequences, _ = il2_final
    assert all(len(p.aligned) >= MIN_HINT_LENGTH for p in unassigned_placements(final, probs, sequences))
    aligned = hints.alignment_positions

    def one_residue(alignment, length):
        positions = aligned(alignment, length)
        kept = np.flatnonzero(positions >= 0)[:MIN_HINT_LENGTH - 1]
        return np.where(np.isin(np.arange(length), kept), positions, -1)

    monkeypatch.setattr(hints, "alignment_positions", one_residue)
    assert unassigned_placements(final, probs, sequences) == ()


def test_no_sequences_or_no_unassigned_chain_offer_nothing(il2_final):
    final, probs, sequences, _ = il2_final
    assert unassigned_placements(final, probs, []) == ()
    threaded = final.take(np.flatnonzero(final.chain_id == "A"))
    assert unassigned_placements(threaded, probs[:30], sequences) == ()


def test_an_offered_numbering_is_judged_against_the_deposited_places(il2_final):
    _, _, sequences, model = il2_final
    rows = np.arange(31, 41)
    truth = rows + 1  # model residue k (0-based) is sequence position k + 1
    assert offered_numbering(model.ca[rows], truth, sequences[0].residues, model) == (10, 10)
    assert offered_numbering(model.ca[rows], truth + 2, sequences[0].residues, model) == (10, 0)
    assert offered_numbering(model.ca[rows], truth + 2, sequences[0].residues, model,
                             tolerance=2) == (10, 10)
    far = model.ca[rows] + 20.0
    assert offered_numbering(far, truth, sequences[0].residues, model) == (0, 0)
    # `bench.rebuild`'s stricter match: 2 Å off is matched at 3 Å, not at 1.5
    moved = model.ca[rows] + np.array([2.0, 0.0, 0.0])
    assert offered_numbering(moved, truth, sequences[0].residues, model)[1] > 0
    assert offered_numbering(moved, truth, sequences[0].residues, model, cutoff=1.5) == (0, 0)


def test_only_each_chains_best_placement_strong_enough_is_named():
    from cryobuild.thread.hints import NAMED_EVALUE, Placement, named_placements

    def place(chain, rank, evalue):
        return Placement(chain, rank, "il2", 10, 20, 1, 11, 5.0, evalue, evalue * 3, 0)

    placements = (place("A", 1, 0.2), place("A", 2, 0.01), place("B", 1, 0.001),
                  place("C", 1, NAMED_EVALUE * 1.5))
    assert [(p.chain_id, p.evalue) for p in named_placements(placements)] == [("B", 0.001), ("A", 0.2)]


def test_no_placement_numbers_residues_out_of_reach(il2_path, monkeypatch):
    """An unassigned chain traced straight (a strand) carrying il2's residues 1-74, its first 20
    with the types of the residues two further on (as in `test_thread_search`): no placement
    leaves out residues between two it numbers consecutively that lie farther apart than
    `search.MAX_DELETE_SPAN`, as threading's search does; with deletes open everywhere and the
    alignments kept as the first search made them, one does."""
    from cryobuild.thread import profiles, search

    model = read_model(il2_path).take(np.arange(74))
    sequence = Sequence("il2", "".join(AA_ORDER[t] for t in read_model(il2_path).aatype))
    straight = np.zeros((74, 3), np.float32)
    straight[:, 0] = np.arange(74) * 3.8
    positions = model.atom_positions - model.ca[:, None] + straight[:, None]
    final = dataclasses.replace(
        model, atom_positions=positions.astype(np.float32), chain_id=np.full(74, "A"),
        residue_number=np.arange(1, 75), aatype=np.full(74, UNK_INDEX),
        atom_mask=model.atom_mask & ATOM14_MASK[UNK_INDEX],
        confidence=np.full(74, 80.0, np.float32), entity_sequences={})
    types = model.aatype.copy()
    types[:20] = model.aatype[2:22]
    probs = noisy_probs(types, 0.6, np.random.default_rng(0)).astype(np.float32)

    def spans_out_of_reach() -> int:
        count = 0
        for placement in unassigned_placements(final, probs, [sequence]):
            numbers = np.array([number for number, _ in placement.aligned])
            positions = np.array([position for _, position in placement.aligned])
            spans = np.linalg.norm(np.diff(straight[numbers - 1], axis=0), axis=1)
            count += int(np.sum((np.diff(positions) == 1) & (spans > search.MAX_DELETE_SPAN)))
        return count

    assert spans_out_of_reach() == 0
    monkeypatch.setattr(profiles, "step_delete_opens",
                        lambda ca: np.full(len(ca), profiles.GAP_OPEN))
    monkeypatch.setattr(hints, "_renumbered", lambda found, gated: found)
    assert spans_out_of_reach() > 0


def test_a_placement_searched_again_keeps_its_evalue_and_takes_the_gated_numbers():
    """`hints._renumbered`: an alignment out of reach takes the numbers of the gated alignment
    on its sequence that shares most of its positions, keeping its own E-value and score (as
    threading keeps the first search's); one that shares none with any is left out; one in
    reach stays as it is; a gated alignment taken twice is listed once."""
    def alignment(evalue, index, positions, within):
        positions = np.asarray(positions)
        return hints._Alignment(evalue, 30.0 - evalue, index, positions,
                                np.flatnonzero(positions >= 0), within)

    out_of_reach = alignment(0.01, 0, [5, 6, 7, 10, 11, -1], False)
    twice = alignment(0.02, 0, [5, 6, 7, 10, 12, -1], False)
    alone = alignment(0.03, 1, [20, 21, 22, 30, 31, 32], False)
    in_reach = alignment(0.5, 0, [40, 41, 42, 43, -1, -1], True)
    gated = [alignment(0.04, 0, [5, 6, 7, 8, 9, -1], True),
             alignment(0.2, 0, [-1, 6, 7, -1, 11, -1], True),
             alignment(0.06, 1, [60, 61, 62, 63, 64, 65], True)]
    renumbered = hints._renumbered([in_reach, alone, twice, out_of_reach], gated)
    assert [item[0] for item in renumbered] == [0.01, 0.5]
    evalue, score, index, positions, placed, within = renumbered[0]
    assert (score, index, within) == (out_of_reach[1], 0, True)
    np.testing.assert_array_equal(positions, gated[0].positions)
    np.testing.assert_array_equal(placed, gated[0].placed)
