"""PNAS's search space: cells of B blocks, in one canonical form (Liu et al., ECCV 2018).

Sec. 3.1: a cell has B blocks; a block picks two inputs (the two previous cells' outputs or
earlier blocks) and two ops and adds the results; the output concatenates all blocks. Cells
are plain tuples of ``(op, input)`` pairs, two per block, so ``Genotype.from_cell(cell)``,
the evaluation network, the drawings and JSON come from the foundation. Sec. 4.1 grows them
block by block (:func:`expand`), which :mod:`nas_tutorial.pnas` searches.

Canonical form (what "the same cell" means here): inside a block the two (input, op) pairs
are unordered, so the pair with the smaller ``(input, op)`` comes first; blocks are put in
a topological order that takes, among the blocks whose inputs are placed, the one with the
smallest structural signature (the block's pairs with earlier blocks spelled out
recursively), and inputs are renumbered. Two cells that differ only in block order thus get
one key; the only merge this misses is when two blocks are structurally identical (then
two equivalent forms may remain, never a wrong merge).
"""
from __future__ import annotations

import itertools

import numpy as np

from ..ops import PNAS_OPS

MAX_BLOCKS = 5  # B of the paper's space (Sec. 3.1); sizes the surrogates' input vocabulary


def _blocks_of(cell) -> list:
    return [tuple(cell[2 * i:2 * i + 2]) for i in range(len(cell) // 2)]


def canonical(cell) -> tuple:
    """The canonical form of a cell (flat ``(op, input)`` pairs); see the module docstring."""
    blocks = [tuple((str(op), int(i)) for op, i in b) for b in _blocks_of(cell)]
    sigs = []
    for block in blocks:  # inputs only point back, so earlier signatures exist
        parts = sorted(f"{op}({sigs[i - 2] if i >= 2 else i})" for op, i in block)
        sigs.append("+".join(parts))
    order, placed = [], set()
    while len(order) < len(blocks):
        ready = [j for j in range(len(blocks)) if j not in placed
                 and all(i < 2 or i - 2 in placed for _, i in blocks[j])]
        j = min(ready, key=lambda j: (sigs[j], j))
        order.append(j)
        placed.add(j)
    new_index = {old: 2 + k for k, old in enumerate(order)}
    out = []
    for j in order:
        pairs = [(op, i if i < 2 else new_index[i - 2]) for op, i in blocks[j]]
        out.extend(sorted(pairs, key=lambda p: (p[1], p[0])))
    return tuple(out)


def cell_key(cell) -> str:
    """A short string naming a canonical cell: ``op:in+op:in | ...`` per block."""
    return " | ".join(f"{a[0]}:{a[1]}+{b[0]}:{b[1]}" for a, b in _blocks_of(cell))


def _new_blocks(ops, n_inputs) -> list:
    """All blocks over ``n_inputs`` inputs: unordered pairs of (op, input), repeats allowed."""
    options = [(op, i) for i in range(n_inputs) for op in ops]
    return list(itertools.combinations_with_replacement(options, 2))


def one_block_cells(ops=PNAS_OPS) -> list:
    """All one-block cells: C(2|O|, 2) + 2|O| of them (136 for the 8 PNAS ops)."""
    return _dedupe(canonical(block) for block in _new_blocks(ops, 2))


def expand(cell, ops=PNAS_OPS) -> list:
    """All cells with one more block than ``cell``, canonical and without duplicates."""
    b = len(cell) // 2
    return _dedupe(canonical(tuple(cell) + block) for block in _new_blocks(ops, b + 2))


def expand_all(cells, ops=PNAS_OPS) -> list:
    """The children of every cell in ``cells``; a child reachable from two parents once."""
    return _dedupe(child for cell in cells for child in expand(cell, ops))


def _dedupe(cells) -> list:
    seen, out = set(), []
    for c in cells:
        if c not in seen:
            seen.add(c)
            out.append(c)
    return out


def space_size(b: int, n_ops: int = len(PNAS_OPS)) -> int:
    """Cells with ``b`` blocks counted as sequences of unordered blocks (before removing
    block-order duplicates): the product over blocks of C(n, 2) + n, n = (2 + i)|O|."""
    total = 1
    for i in range(b):
        n = (2 + i) * n_ops
        total *= n * (n + 1) // 2
    return total


def random_cells(n: int, blocks: int, ops=PNAS_OPS, seed: int = 0) -> list:
    """``n`` distinct random cells of ``blocks`` blocks, each block drawn uniformly."""
    rng = np.random.default_rng(seed)
    pools = [_new_blocks(ops, 2 + i) for i in range(blocks)]
    limit = min(n, space_size(blocks, len(ops)))
    out, seen = [], set()
    for _ in range(100 * max(n, 1)):
        if len(out) == limit:
            break
        cell = canonical(sum((pool[rng.integers(len(pool))] for pool in pools), ()))
        if cell not in seen:
            seen.add(cell)
            out.append(cell)
    return out
