"""Tests of cryobuild.sequences: the FASTA reading policy and its errors."""

import warnings

import numpy as np
import pytest

from cryobuild.errors import InputError, InputWarning
from cryobuild.residues import AA_ORDER, UNK_INDEX
from cryobuild.sequences import (
    Sequence,
    parse_fasta,
    read_fasta,
    validate_sequence_text,
)

THREE_CHAINS = """>A heavy chain
MKVLAAGIW
>B light chain
DIQMTQSP
>C
GSHMLE
"""


def test_multi_chain_records_in_order():
    sequences = parse_fasta(THREE_CHAINS)
    assert [s.name for s in sequences] == ["A", "B", "C"]
    assert [s.description for s in sequences] == ["heavy chain", "light chain", ""]
    assert [s.residues for s in sequences] == ["MKVLAAGIW", "DIQMTQSP", "GSHMLE"]


def test_read_fasta_file(tmp_path):
    path = tmp_path / "chains.fasta"
    path.write_text(THREE_CHAINS)
    assert read_fasta(path) == parse_fasta(THREE_CHAINS)


@pytest.mark.parametrize(
    "text, residues",
    [
        (">A\nmkvLaa\n", "MKVLAA"),  # lowercase upper-cased
        (">A\n MK V\r\n\n  LA\tA \r\n", "MKVLAA"),  # whitespace and line breaks ignored
        (">A\nMK--V.LA\n.A-\n", "MKVLAA"),  # gaps removed
        (">A\nMKVLAA*\n", "MKVLAA"),  # trailing stop removed
        (">A\nMKV\nLAA*-\n\n", "MKVLAA"),  # ... also when followed by gaps and blank lines
        (">A\nUOBZJX\n", "CKXXXX"),  # nonstandard letters mapped, ambiguous ones to X
        (f">A\n{AA_ORDER.lower()}\n", AA_ORDER),
    ],
)
def test_residue_policy(text, residues):
    (sequence,) = parse_fasta(text)
    assert sequence.residues == residues


def test_aatype_indexes_aa_order_with_x_as_unknown():
    sequence = Sequence("A", "ACYX")
    np.testing.assert_array_equal(sequence.aatype, [0, 1, 19, UNK_INDEX])
    assert sequence.aatype.dtype == np.int64
    assert UNK_INDEX == 20
    assert len(sequence) == 4


@pytest.mark.parametrize("residues", ["", "MK1", "mkv", "MKB"])
def test_sequence_rejects_invalid_residues(residues):
    with pytest.raises(ValueError):
        Sequence("A", residues)


def _parse_error(text: str) -> str:
    with pytest.raises(InputError) as error:
        parse_fasta(text, source="chains.fasta")
    message = str(error.value)
    assert message.startswith("chains.fasta: ")
    assert "\n" not in message
    return message


@pytest.mark.parametrize("text", ["", "   \n\n"])
def test_empty_text_is_an_error(text):
    assert "empty" in _parse_error(text)


def test_text_without_header_is_not_fasta():
    assert "no '>' header" in _parse_error("MKVLAAGIW\nDIQMTQSP\n")


def test_text_before_first_header():
    assert "line 1: text before the first '>' header" in _parse_error("MKV\n>A\nMKV\n")


def test_record_without_residues():
    message = _parse_error(">A\nMKV\n>B\n>C\nGG\n")
    assert "record 'B' (line 3) has no residues" in message


def test_record_with_only_gaps_and_stop_has_no_residues():
    assert "record 'A' (line 1) has no residues" in _parse_error(">A\n--*\n")


def test_header_without_name():
    assert "line 1: header without a name" in _parse_error(">\nMKV\n")


def test_digits_are_an_error_naming_character_and_line():
    message = _parse_error(">A\nMKV\n>B\nMK1VL\n")
    assert "line 4 (record 'B'): '1' is not an amino-acid letter" in message


def test_several_bad_characters_on_one_line_are_listed_once_each():
    message = _parse_error(">A\nM1K2#1\n")
    assert "'1', '2', '#' are not amino-acid letters" in message


def test_stop_inside_sequence_is_an_error():
    message = _parse_error(">A\nMKV*\nLAA\n")
    assert "line 2 (record 'A'): '*' (stop) inside the sequence" in message


def test_error_names_the_first_problems_and_counts_the_rest():
    message = _parse_error(">A\nM1\n>B\n>C\nK*K\n>D\nK2\n>E\nK3\n")
    assert message.count("; also ") == 2 and "(and 2 more problems)" in message
    assert "(record 'A')" in message and "(record 'C')" in message and "(record 'D')" not in message


def test_missing_file(tmp_path):
    path = tmp_path / "missing.fasta"
    with pytest.raises(InputError, match="missing.fasta: no such FASTA file"):
        read_fasta(path)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.fasta"
    path.write_bytes(b"")
    with pytest.raises(InputError, match="empty.fasta: empty"):
        read_fasta(path)


def test_binary_file(tmp_path):
    path = tmp_path / "map.fasta"
    path.write_bytes(b"MAP \xff\xfe\x00\x81")
    with pytest.raises(InputError, match="map.fasta: not a text file"):
        read_fasta(path)


def test_file_errors_name_the_file(tmp_path):
    path = tmp_path / "bad.fasta"
    path.write_text(">A\nMK9\n")
    with pytest.raises(InputError, match=r"bad\.fasta: line 2 \(record 'A'\): '9'"):
        read_fasta(path)


def test_duplicate_sequences_are_kept():
    sequences = parse_fasta(">A\nMKV\n>B\nGGS\n>C\nmkv*\n>D\nMKV\n")
    assert [(s.name, s.residues) for s in sequences] == [
        ("A", "MKV"), ("B", "GGS"), ("C", "MKV"), ("D", "MKV")]


def test_duplicate_names_get_a_suffix_and_a_warning():
    with pytest.warns(InputWarning, match="duplicate record name 'A' renamed to 'A_3'"):
        sequences = parse_fasta(">A\nMKV\n>A_2\nGG\n>A\nLL\n")
    assert [s.name for s in sequences] == ["A", "A_2", "A_3"]
    assert [s.residues for s in sequences] == ["MKV", "GG", "LL"]


def test_many_duplicate_names_give_one_warning():
    text = ">A\nMKV\n" * 50
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sequences = parse_fasta(text, "many.fasta")
    assert [s.name for s in sequences] == ["A"] + [f"A_{n}" for n in range(2, 51)]
    assert [str(w.message) for w in caught] == [
        "many.fasta: 49 duplicate record names: 'A' renamed to 'A_2', 'A' renamed to 'A_3', "
        "'A' renamed to 'A_4', ..."
    ]


def test_unique_names_do_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        parse_fasta(THREE_CHAINS)


def test_validate_lists_every_problem():
    problems = validate_sequence_text("junk\n>A\nMK1\n>B\n>C\nM*K\n")
    assert problems == [
        "line 1: text before the first '>' header",
        "line 3 (record 'A'): '1' is not an amino-acid letter",
        "record 'B' (line 4) has no residues",
        "line 6 (record 'C'): '*' (stop) inside the sequence; it is only allowed as the last "
        "character",
    ]


def test_validate_accepts_what_parse_accepts():
    assert validate_sequence_text(THREE_CHAINS) == []
    assert validate_sequence_text(">A\nMKV\n>A\nMKV\n") == []


RNA = "GGCUAGCUAGCUAGGCUAAUCGAUCG"  # 26 nucleotides


def test_nucleic_acid_records_are_left_out_with_a_warning():
    """A complex's FASTA with an RNA and a DNA chain: the protein is kept, the others named."""
    text = f">P\nMKVLAAGIT\n>rna\n{RNA}\n>dna\n{RNA.replace('U', 'T').lower()}\n"
    with pytest.warns(InputWarning, match=r"2 records \(record 'rna', record 'dna'\) have only A, C, G"):
        sequences = parse_fasta(text, "complex.fasta")
    assert [s.name for s in sequences] == ["P"]
    assert validate_sequence_text(text) == []


def test_nucleic_acid_only_is_an_error_and_short_peptides_stay_protein():
    with pytest.raises(InputError, match="no protein sequence: record 'rna' has only A, C, G, T, U and N"):
        parse_fasta(f">rna\n{RNA}\n")
    assert validate_sequence_text(f">rna\n{RNA}\n")[0].startswith("no protein sequence")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert parse_fasta(">pep\nGAGACAGAGCAT\n")[0].residues == "GAGACAGAGCAT"
