"""Protein sequences: the `Sequence` type and FASTA reading.

Reading policy (the same for files, pasted text and live validation in the GUI):

* A record starts with a header line ``>name description``. The name is the first word after
  ``>``; the rest of the line is the description. A header without a name is an error.
* Residue lines may be split and wrapped anywhere: whitespace and line breaks are ignored, and
  lowercase letters are accepted and upper-cased.
* Alignment gap characters ``-`` and ``.`` are removed without complaint.
* A ``*`` (stop) at the very end of a record is removed; a ``*`` anywhere else is an error.
* The 20 standard letters of `cryobuild.residues.AA_ORDER` are kept as they are.
  Two nonstandard residues are mapped to the standard residue they are built like:
  ``U`` (selenocysteine) -> ``C`` and ``O`` (pyrrolysine) -> ``K``. The ambiguity codes ``B``
  (D or N), ``Z`` (E or Q), ``J`` (I or L) and ``X`` (unknown) all become ``X``, which downstream
  code treats as "any residue" (index `cryobuild.residues.UNK_INDEX` in `Sequence.aatype`).
* Any other character (digits, punctuation, ...) is an error naming the character and its line.
* Every record needs at least one residue; text without any ``>`` header is not FASTA.
* A record of at least `NUCLEIC_MIN_LENGTH` letters that are all A, C, G, T, U or N is a nucleic
  acid (a FASTA of a ribosome or a protein-DNA complex holds such chains): it is left out with
  an `InputWarning`, since cryobuild builds proteins; text with nothing else is an error.
* Records with identical sequences are all kept (several copies of a chain are legal, e.g. in a
  homo-oligomer). Duplicate *names* are made unique with a suffix (``A``, ``A_2``, ``A_3``, ...)
  and an `InputWarning`.

`parse_fasta` and `read_fasta` raise `cryobuild.errors.InputError` with a one-line message that
names the source and, where it helps, the record and the line number. `validate_sequence_text`
returns every problem as a list of messages instead of raising.
"""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import numpy as np

from .errors import InputError, InputWarning
from .residues import AA_INDEX, AA_ORDER, UNK_INDEX, UNK_ONE

__all__ = [
    "NUCLEIC_MIN_LENGTH",
    "Sequence",
    "parse_fasta",
    "read_fasta",
    "validate_sequence_text",
]

_ALPHABET = frozenset(AA_ORDER + UNK_ONE)
#: Letters accepted in FASTA text that are stored as another letter.
_LETTER_MAP = {"U": "C", "O": "K", "B": UNK_ONE, "Z": UNK_ONE, "J": UNK_ONE}
#: Records this long whose letters are all nucleotide codes are nucleic acids: 20 residues of a
#: protein all drawn from A, C, G, T and N (5 of the 20 amino acids) have a chance of (1/4)^20,
#: about 1e-12, at even composition; shorter records (a Gly/Ala-rich peptide) stay protein.
NUCLEIC_MIN_LENGTH = 20
_NUCLEIC_LETTERS = frozenset("ACGTUN")
_GAPS = "-."
_STOP = "*"
#: A FASTA file's problems named in its error, the rest counted.
PROBLEMS_SHOWN = 3


@dataclasses.dataclass(frozen=True)
class Sequence:
    """One protein chain sequence.

    Attributes
    ----------
    name : str
        Record name (the first word of the FASTA header); not empty.
    residues : str
        One-letter codes, length ``L`` >= 1, from `cryobuild.residues.AA_ORDER` plus ``X`` for an
        unknown or ambiguous residue.
    description : str
        Rest of the FASTA header line (may be empty).
    """

    name: str
    residues: str
    description: str = ""

    def __post_init__(self):
        if not self.name:
            raise ValueError("a sequence needs a non-empty name")
        if not self.residues:
            raise ValueError(f"sequence {self.name!r} has no residues")
        invalid = sorted(set(self.residues) - _ALPHABET)
        if invalid:
            raise ValueError(
                f"sequence {self.name!r} contains {', '.join(map(repr, invalid))}: residues must "
                f"be one-letter codes from {AA_ORDER!r} or 'X'"
            )

    def __len__(self) -> int:
        return len(self.residues)

    @property
    def aatype(self) -> np.ndarray:
        """Residue-type indices into AA_ORDER, `UNK_INDEX` (20) for ``X``: int64 ``[L]``."""
        return np.array(
            [AA_INDEX.get(letter, UNK_INDEX) for letter in self.residues], dtype=np.int64
        )


@dataclasses.dataclass
class _Record:
    """A FASTA record being read: header fields, cleaned residues so far and its problems."""

    name: str
    description: str
    header_line: int  # 1-based line number of the ``>`` line
    letters: list[str] = dataclasses.field(default_factory=list)
    written: set[str] = dataclasses.field(default_factory=set)  # upper-case letters as in the text
    problems: list[str] = dataclasses.field(default_factory=list)
    stop_line: int = 0  # line of a ``*`` not yet known to be the last character, 0 if none

    def label(self) -> str:
        return f"record {self.name!r}" if self.name else f"the record on line {self.header_line}"

    def add_line(self, content: str, number: int) -> None:
        """Append the residues of line ``number`` (whitespace already removed)."""
        invalid: list[str] = []
        for character in content:
            if character in _GAPS:
                continue
            if self.stop_line:
                self.problems.append(
                    f"line {self.stop_line} ({self.label()}): '*' (stop) inside the sequence; "
                    "it is only allowed as the last character"
                )
                self.stop_line = 0
            if character == _STOP:
                self.stop_line = number
                continue
            letter = character.upper()
            self.written.add(letter)
            letter = _LETTER_MAP.get(letter, letter)
            if letter in _ALPHABET:
                self.letters.append(letter)
            elif character not in invalid:
                invalid.append(character)
        if invalid:
            listed = ", ".join(repr(character) for character in invalid)
            what = (
                "is not an amino-acid letter" if len(invalid) == 1 else "are not amino-acid letters"
            )
            self.problems.append(f"line {number} ({self.label()}): {listed} {what}")

    def is_nucleic(self) -> bool:
        return len(self.letters) >= NUCLEIC_MIN_LENGTH and self.written <= _NUCLEIC_LETTERS

    def finish(self) -> Sequence | None:
        """The record's sequence, or None when it has problems (then listed in ``problems``)."""
        if not self.letters and not self.problems:
            self.problems.append(f"{self.label()} (line {self.header_line}) has no residues")
        if self.problems:
            return None
        return Sequence(self.name, "".join(self.letters), self.description)


def _scan(text: str) -> tuple[list[Sequence], list[str], list[str]]:
    """Read FASTA text into protein sequences, a list of problems in text order (empty when
    valid) and the labels of the nucleic-acid records left out (``record 'name'``).

    Sequences come back only for records without problems; names are not yet made unique.
    """
    if not text.strip():
        return [], ["empty: no FASTA records"], []
    lines = text.splitlines()
    if not any(line.lstrip().startswith(">") for line in lines):
        return [], ["not FASTA: no '>' header line (each record starts with '>name')"], []

    # Problems in text order: text before the first header can only come first.
    problems: list[str] = []
    records: list[_Record] = []
    for number, line in enumerate(lines, start=1):
        stripped = line.strip()
        if stripped.startswith(">"):
            fields = stripped[1:].split(None, 1)
            record = _Record(fields[0] if fields else "", "".join(fields[1:]).strip(), number)
            if not record.name:
                record.problems.append(f"line {number}: header without a name (expected '>name')")
            records.append(record)
            continue
        content = "".join(stripped.split())
        if not content:
            continue
        if records:
            records[-1].add_line(content, number)
        else:
            problems.append(f"line {number}: text before the first '>' header")

    sequences, nucleic = [], []
    for record in records:
        sequence = record.finish()
        problems.extend(record.problems)
        if sequence is None:
            continue
        if record.is_nucleic():
            nucleic.append(record.label())
        else:
            sequences.append(sequence)
    if nucleic and not sequences and not problems:
        problems.append(f"no protein sequence: {_listed(nucleic)} only A, C, G, T, U and N, so a "
                        "nucleic acid, and cryobuild builds proteins")
    return sequences, problems, nucleic


def _listed(labels: list[str]) -> str:
    """``"record 'A' has"`` or ``"3 records (record 'A', ...) have"``."""
    if len(labels) == 1:
        return f"{labels[0]} has"
    shown = ", ".join(labels[:3]) + (", ..." if len(labels) > 3 else "")
    return f"{len(labels)} records ({shown}) have"


def _unique_names(sequences: list[Sequence], source: str) -> list[Sequence]:
    """Rename repeated record names ``A`` -> ``A_2``, ``A_3``, ... (with one warning for all)."""
    taken = {sequence.name for sequence in sequences}
    seen: set[str] = set()
    unique, renames = [], []
    for sequence in sequences:
        if sequence.name in seen:
            suffix = 2
            while f"{sequence.name}_{suffix}" in taken:
                suffix += 1
            new_name = f"{sequence.name}_{suffix}"
            renames.append(f"{sequence.name!r} renamed to {new_name!r}")
            taken.add(new_name)
            sequence = dataclasses.replace(sequence, name=new_name)
        seen.add(sequence.name)
        unique.append(sequence)
    if len(renames) == 1:
        warnings.warn(f"{source}: duplicate record name {renames[0]}", InputWarning, stacklevel=3)
    elif renames:
        shown = ", ".join(renames[:3]) + (", ..." if len(renames) > 3 else "")
        warnings.warn(f"{source}: {len(renames)} duplicate record names: {shown}",
                      InputWarning, stacklevel=3)
    return unique


def validate_sequence_text(text: str) -> list[str]:
    """Check FASTA text and describe every problem, for live validation while the user types.

    Parameters
    ----------
    text : str
        FASTA text (see the module docstring for what is accepted).

    Returns
    -------
    list of str
        One human-readable message per problem, in the order of the text; empty when
        `parse_fasta` would accept the text. Duplicate record names are not problems.

    Examples
    --------
    >>> validate_sequence_text(">A\\nMKV1L\\n")
    ["line 2 (record 'A'): '1' is not an amino-acid letter"]
    """
    return _scan(text)[1]


def parse_fasta(text: str, source: str = "<text>") -> list[Sequence]:
    """Parse FASTA text into sequences, in the order of the text.

    Parameters
    ----------
    text : str
        FASTA text (see the module docstring for the policy on case, gaps, stops and
        nonstandard letters).
    source : str
        Where the text came from (a file name), used in error and warning messages.

    Returns
    -------
    list of Sequence
        One per protein record, at least one. Record names are unique (repeats get a suffix
        and an `InputWarning`); nucleic-acid records are left out with an `InputWarning`.

    Raises
    ------
    InputError
        The text is empty, has no ``>`` header, has a record without residues, contains a
        character that is not allowed, or holds nucleic acids only. The message names
        ``source`` and the first problem (with its line) and says how many more there are.

    Examples
    --------
    >>> [s.residues for s in parse_fasta(">A\\nmkv-lu*\\n>B\\nGBX\\n")]
    ['MKVLC', 'GXX']
    """
    sequences, problems, nucleic = _scan(text)
    if problems:
        extra = len(problems) - PROBLEMS_SHOWN
        more = f" (and {extra} more problem{'s' if extra > 1 else ''})" if extra > 0 else ""
        raise InputError(f"{source}: {'; also '.join(problems[:PROBLEMS_SHOWN])}{more}")
    if nucleic:
        warnings.warn(f"{source}: {_listed(nucleic)} only A, C, G, T, U and N: left out as nucleic "
                      "acid (cryobuild builds proteins)", InputWarning, stacklevel=2)
    return _unique_names(sequences, source)


def read_fasta(path: str | Path) -> list[Sequence]:
    """Read a FASTA file (UTF-8 or ASCII text) with `parse_fasta`.

    Parameters
    ----------
    path : str or Path
        The FASTA file.

    Returns
    -------
    list of Sequence
        One per record, in file order.

    Raises
    ------
    InputError
        The file is missing, is not text, is empty, or its contents break the rules of
        `parse_fasta`.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such FASTA file")
    if path.is_dir():
        raise InputError(f"{path}: is a directory, not a FASTA file")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InputError(f"{path}: not a text file, so not FASTA") from None
    return parse_fasta(text, source=str(path))
