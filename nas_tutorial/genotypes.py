"""Architectures as plain data: one ``Genotype`` for DARTS/PC-DARTS and PNAS cells.

The encoding is DARTS's (official ``genotypes.py``): a cell is a flat tuple of
``(op_name, input_index)`` pairs, two per intermediate node (PNAS: per block); node ``i``
is the sum of its two pairs. Inputs 0 and 1 are the outputs of the cells k-2 and k-1; input
``2 + j`` is node ``j`` of the same cell. The cell output concatenates the nodes listed in
``*_concat``. PNAS (Sec. 3.1) uses one cell for both roles, so its genotypes have
``reduce == normal``.

Published genotypes: DARTS (ICLR 2019) Fig. 4-5 / official code; PC-DARTS (ICLR 2020)
official code; PNASNet-5 (ECCV 2018) Fig. 1, read from the TensorFlow model definition.
"""
from __future__ import annotations

import json
import re
import operator
from dataclasses import dataclass
from pathlib import Path

from .ops import OPS


MAX_JSON_DEPTH = 16  # a genotype is 3 levels deep, 4 inside a run summary
MAX_NODES = 32       # per cell; DARTS cells have 4 nodes, PNAS cells 5 blocks


def json_depth(text: str) -> int:
    """The deepest nesting of JSON arrays and objects in ``text`` (brackets inside strings
    do not count); no parsing, so no recursion."""
    depth = deepest = 0
    for m in re.finditer(r'"(?:\\.|[^"\\])*"|[\[\]{}]', text):
        c = m.group()
        if c in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif c in "]}":
            depth -= 1
    return deepest


class GenotypeError(ValueError):
    """A genotype that cannot describe a cell; the message says what is wrong."""


Pair = tuple  # (op_name: str, input_index: int)

# A genotype file is a few hundred bytes (the published cells: ~400); a file this large is
# something else, and reading it could take gigabytes (a 57 MB file took 15 GB).
MAX_FILE_BYTES = 1_000_000


def _index(value, what: str) -> int:
    """``value`` as an input index: a whole number (Python or numpy int), never a float or a
    bool, which ``int()`` would silently turn into another index (1.7 -> 1, true -> 1)."""
    if not isinstance(value, bool):
        try:
            return operator.index(value)
        except TypeError:
            pass
    try:
        shown = json.dumps(value)  # as the file spells it: true, 1.7, "2"
    except (TypeError, ValueError):
        shown = repr(value)
    raise GenotypeError(f"{what}: an index must be a whole number, got {shown}")


@dataclass(frozen=True)
class Genotype:
    """Normal and reduction cell, each a tuple of (op, input) pairs, two per node."""

    normal: tuple
    normal_concat: tuple
    reduce: tuple
    reduce_concat: tuple

    def __post_init__(self):
        # Accept lists (from JSON or a widget) but store tuples, so genotypes hash and compare.
        for field in ("normal", "reduce"):
            pairs = tuple((str(op), _index(i, f"{field} node {k // 2} input"))
                          for k, (op, i) in enumerate(getattr(self, field)))
            object.__setattr__(self, field, pairs)
        for field in ("normal_concat", "reduce_concat"):
            object.__setattr__(self, field, tuple(_index(i, field) for i in getattr(self, field)))
        self.validate()

    # -- structure -----------------------------------------------------------------------
    @property
    def steps(self) -> int:
        """Number of intermediate nodes (blocks) in the normal cell."""
        return len(self.normal) // 2

    def nodes(self, cell: str = "normal") -> list:
        """The cell as a list of nodes, each ``((op, input), (op, input))``."""
        pairs = getattr(self, cell)
        return [(pairs[2 * i], pairs[2 * i + 1]) for i in range(len(pairs) // 2)]

    def validate(self, ops=None) -> None:
        allowed = set(ops if ops is not None else OPS) - {"none"}
        for cell in ("normal", "reduce"):
            pairs, concat = getattr(self, cell), getattr(self, cell + "_concat")
            if len(pairs) > 2 * MAX_NODES:  # refused before any network is built from it
                raise GenotypeError(f"{cell} cell has {len(pairs) // 2:,} nodes; at most "
                                    f"{MAX_NODES} (DARTS cells have 4, PNAS cells 5 blocks)")
            if not pairs or len(pairs) % 2:
                raise GenotypeError(f"{cell} cell needs an even, non-zero number of (op, input) "
                                    f"pairs (two per node), got {len(pairs)}")
            for k, (op, inp) in enumerate(pairs):
                node = k // 2
                if op not in allowed:
                    raise GenotypeError(f"{cell} node {node}: unknown op '{op}'; allowed: "
                                        f"{', '.join(sorted(allowed))}")
                if not 0 <= inp < 2 + node:
                    raise GenotypeError(f"{cell} node {node}: input {inp} is out of range; a "
                                        f"node may read 0..{1 + node} (two cell inputs and "
                                        f"earlier nodes)")
            n_states = 2 + len(pairs) // 2
            if not concat:
                raise GenotypeError(f"{cell}_concat is empty: the cell needs an output")
            bad = [i for i in concat if not 2 <= i < n_states]
            if bad:
                raise GenotypeError(f"{cell}_concat {bad} out of range; allowed nodes are "
                                    f"2..{n_states - 1}")
            twice = sorted({i for i in concat if concat.count(i) > 1})
            if twice:
                raise GenotypeError(f"{cell}_concat lists node {twice[0]} twice; list each node "
                                    f"once")

    # -- serialization -------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "normal": [list(p) for p in self.normal],
            "normal_concat": list(self.normal_concat),
            "reduce": [list(p) for p in self.reduce],
            "reduce_concat": list(self.reduce_concat),
        }

    def to_json(self, path=None, indent=None) -> str:
        text = json.dumps(self.to_dict(), indent=indent)
        if path is not None:
            Path(path).write_text(text + "\n")
        return text

    @classmethod
    def from_dict(cls, d: dict) -> "Genotype":
        if not isinstance(d, dict):
            raise GenotypeError("a genotype must be a JSON object with keys normal, "
                                "normal_concat and, for a reduction cell of its own, reduce, "
                                "reduce_concat (without them the normal cell is reused, as "
                                "PNAS does)")
        if "genotype" in d and isinstance(d["genotype"], dict):  # a run summary
            d = d["genotype"]
        missing = [k for k in ("normal", "normal_concat") if k not in d]
        if missing:
            raise GenotypeError(f"genotype is missing {', '.join(missing)}")
        try:
            return cls(normal=d["normal"], normal_concat=d["normal_concat"],
                       reduce=d.get("reduce", d["normal"]),
                       reduce_concat=d.get("reduce_concat", d["normal_concat"]))
        except (TypeError, ValueError, OverflowError) as e:
            if isinstance(e, GenotypeError):
                raise
            raise GenotypeError(f"malformed genotype: each pair must be [op_name, input_index] "
                                f"({e})") from None

    @classmethod
    def from_json(cls, text: str) -> "Genotype":
        def no_constant(name):  # Python's json reads NaN/Infinity; JSON has no such numbers
            raise GenotypeError(f"not valid JSON: {name} is not a number JSON allows (an input "
                                f"index is a whole number)")

        # The project's own depth check, before the parser: how deep a parser may recurse
        # differs between Python versions (3.12 reads nesting that 3.11 refuses).
        if json_depth(text) > MAX_JSON_DEPTH:
            raise GenotypeError(f"not a genotype: the JSON is nested too deeply (over "
                                f"{MAX_JSON_DEPTH} levels; a genotype is an object of lists "
                                f"of [op, index] pairs)")
        try:
            d = json.loads(text, parse_constant=no_constant)
        except GenotypeError:
            raise
        except ValueError as e:  # JSONDecodeError, or an integer of over 4,300 digits
            raise GenotypeError(f"not valid JSON: {e}") from None
        return cls.from_dict(d)

    @classmethod
    def load(cls, path) -> "Genotype":
        path = Path(path)
        try:
            size = path.stat().st_size
            if size > MAX_FILE_BYTES:
                raise GenotypeError(f"genotype file {path} is {size / 1e6:.1f} MB; a genotype "
                                    f"is a few hundred bytes (limit {MAX_FILE_BYTES // 10**6} "
                                    f"MB): is it the right file?")
            text = path.read_text()
        except OSError as e:
            raise GenotypeError(f"cannot read genotype file {path}: {e.strerror}") from None
        except UnicodeDecodeError:
            raise GenotypeError(f"genotype file {path} is not text (UTF-8 JSON)") from None
        return cls.from_json(text)

    @classmethod
    def from_cell(cls, pairs, concat=None) -> "Genotype":
        """A PNAS-style genotype: the same cell for normal and reduction."""
        pairs = tuple(pairs)
        concat = tuple(concat) if concat is not None else tuple(range(2, 2 + len(pairs) // 2))
        return cls(pairs, concat, pairs, concat)

    # -- display -------------------------------------------------------------------------
    def __str__(self) -> str:
        return (f"Genotype(normal={list(self.normal)}, normal_concat={list(self.normal_concat)}, "
                f"reduce={list(self.reduce)}, reduce_concat={list(self.reduce_concat)})")

    def _repr_mimebundle_(self, include=None, exclude=None):
        # A notebook shows the cell drawing (SVG, and PNG for untrusted notebooks); without
        # graphviz (or its `dot`) it falls back to the text repr.
        try:
            from .viz.shared import draw_genotype
            bundle = draw_genotype(self)._repr_mimebundle_()
        except Exception:
            bundle = {}
        return {**bundle, "text/plain": repr(self)}


def resolve(name_or_path) -> Genotype:
    """A published genotype by name (``PC_DARTS``) or a JSON file path."""
    if isinstance(name_or_path, Genotype):
        return name_or_path
    key = str(name_or_path)
    if key.upper() in GENOTYPES:
        return GENOTYPES[key.upper()]
    if Path(key).suffix == ".json" or Path(key).exists():
        return Genotype.load(key)
    raise GenotypeError(f"unknown genotype '{key}': use one of {', '.join(GENOTYPES)} "
                        f"or a path to a genotype JSON file")


DARTS_V1 = Genotype(
    normal=[("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("skip_connect", 0), ("sep_conv_3x3", 1),
            ("skip_connect", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("skip_connect", 2)],
    normal_concat=[2, 3, 4, 5],
    reduce=[("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 0),
            ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("avg_pool_3x3", 0)],
    reduce_concat=[2, 3, 4, 5],
)

DARTS_V2 = Genotype(
    normal=[("sep_conv_3x3", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("sep_conv_3x3", 1),
            ("sep_conv_3x3", 1), ("skip_connect", 0), ("skip_connect", 0), ("dil_conv_3x3", 2)],
    normal_concat=[2, 3, 4, 5],
    reduce=[("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 1),
            ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("max_pool_3x3", 1)],
    reduce_concat=[2, 3, 4, 5],
)

PC_DARTS = Genotype(
    normal=[("sep_conv_3x3", 1), ("skip_connect", 0), ("sep_conv_3x3", 0), ("dil_conv_3x3", 1),
            ("sep_conv_5x5", 0), ("sep_conv_3x3", 1), ("avg_pool_3x3", 0), ("dil_conv_3x3", 1)],
    normal_concat=[2, 3, 4, 5],
    reduce=[("sep_conv_5x5", 1), ("max_pool_3x3", 0), ("sep_conv_5x5", 1), ("sep_conv_5x5", 2),
            ("sep_conv_3x3", 0), ("sep_conv_3x3", 3), ("sep_conv_3x3", 1), ("sep_conv_3x3", 2)],
    reduce_concat=[2, 3, 4, 5],
)

# PNASNet-5 (PNAS Fig. 1): 0 = H_{c-2}, 1 = H_{c-1}, 2+ = earlier blocks; all 5 blocks
# are concatenated, and the same cell is used for reduction.
PNASNET_5 = Genotype.from_cell([
    ("sep_conv_5x5", 0), ("max_pool_3x3", 0),
    ("sep_conv_7x7", 1), ("max_pool_3x3", 1),
    ("sep_conv_5x5", 1), ("sep_conv_3x3", 1),
    ("sep_conv_3x3", 4), ("max_pool_3x3", 1),
    ("sep_conv_3x3", 0), ("identity", 1),
])

GENOTYPES = {"DARTS_V1": DARTS_V1, "DARTS_V2": DARTS_V2, "PC_DARTS": PC_DARTS,
             "PNASNET_5": PNASNET_5}
