"""PNAS: the cell space, the surrogates, the progressive loop, caching, resume and the CLI.

Loop tests use a fake, deterministic trainer (a function of the cell) so they run in
milliseconds; one test trains real children on digits.
"""
import json
import math
import zlib
from dataclasses import replace

import pytest

import nas_tutorial as nt
from nas_tutorial import pnas
from nas_tutorial.cli import main as cli_main

TWO_OPS = ("sep_conv_3x3", "max_pool_3x3")


def tiny(**kw) -> pnas.PNASConfig:
    base = dict(blocks=3, beam=4, ops=TWO_OPS, fit_steps=20, embed=16, hidden=16,
                ensemble=2, random_baseline=False, workers=2)
    base.update(kw)
    return replace(pnas.PNAS_PRESETS["quick"], **base)


class FakeTrainer:
    """Accuracy = share of sep convs, plus a hash-based jitter; counts trained cells."""

    def __init__(self, fail_after=None):
        self.trained = []
        self.fail_after = fail_after

    def __call__(self, cells):
        if self.fail_after is not None and len(self.trained) >= self.fail_after:
            raise KeyboardInterrupt
        self.trained.extend(cells)
        return [toy_accuracy(c) for c in cells]


def toy_accuracy(cell) -> float:
    convs = sum(op.startswith("sep") for op, _ in cell) / len(cell)
    jitter = zlib.crc32(pnas.cell_key(cell).encode()) % 1000 / 1000
    return 0.3 + 0.5 * convs + 0.05 * jitter


# -- the space ------------------------------------------------------------------------------
def test_136_one_block_cells_for_the_8_ops():
    cells = pnas.one_block_cells(nt.PNAS_OPS)
    assert len(cells) == 136 == pnas.space_size(1)
    assert len(set(cells)) == 136
    assert all(pnas.canonical(c) == c for c in cells)


@pytest.mark.parametrize("n_ops", [1, 2, 3, 8])
def test_one_block_count_is_unordered_pairs_with_repeats(n_ops):
    n = 2 * n_ops
    assert len(pnas.one_block_cells(nt.PNAS_OPS[:n_ops])) == n * (n - 1) // 2 + n


def test_expansions_have_no_duplicates_and_one_more_block():
    parent = pnas.one_block_cells()[17]
    children = pnas.expand(parent)
    assert len(children) == len(set(children)) == 300  # C(24, 2) + 24 new blocks
    assert all(len(c) == 4 and pnas.canonical(c) == c for c in children)
    # Symmetric duplicates merge: swapping a block's pairs or the order of blocks.
    grand = pnas.expand_all(children[:40])
    assert len(grand) == len(set(grand))
    assert len(set(map(pnas.cell_key, grand))) == len(grand)


def test_canonical_form_ignores_pair_and_block_order():
    a = (("sep_conv_3x3", 1), ("max_pool_3x3", 0))
    b = (("identity", 0), ("sep_conv_5x5", 0))
    ab = pnas.canonical(a + b)
    assert ab == pnas.canonical(b + a) == pnas.canonical(a[::-1] + b[::-1])
    # A block reading the one before it keeps pointing at it after reordering.
    c = (("sep_conv_3x3", 3), ("identity", 2))
    c_swapped = (("identity", 3), ("sep_conv_3x3", 2))  # the same block after swapping a, b
    assert pnas.canonical(a + b + c) == pnas.canonical(b + a + c_swapped)
    assert pnas.canonical(a + b + c) != pnas.canonical(b + a + c)
    geno = nt.Genotype.from_cell(pnas.canonical(a + b + c))
    assert geno.normal == geno.reduce and geno.steps == 3


def test_random_cells_are_distinct_and_in_the_space():
    cells = pnas.random_cells(30, 3, TWO_OPS, seed=1)
    assert len(set(cells)) == 30 and all(len(c) == 6 for c in cells)
    assert cells == pnas.random_cells(30, 3, TWO_OPS, seed=1)
    for c in cells:
        nt.Genotype.from_cell(c).validate(TWO_OPS)


# -- surrogates -----------------------------------------------------------------------------
@pytest.mark.parametrize("kind", pnas.PREDICTORS)
def test_surrogate_learns_a_known_ranking_and_predicts_longer_cells(kind):
    ops = ("sep_conv_3x3", "max_pool_3x3", "identity")
    one = pnas.one_block_cells(ops)
    two = pnas.expand_all(one[:6], ops)[::4]
    train = one + two
    s = pnas.Surrogate(kind, ops, embed=32, hidden=32, ensemble=3, steps=150, lr=0.01)
    s.fit(train, [toy_accuracy(c) for c in train])
    # Trained on 1 and 2 blocks, asked about 3-block cells it has never seen.
    three = pnas.random_cells(60, 3, ops, seed=0)
    pred = s.predict(three)
    assert pred.shape == (60,) and ((pred > 0) & (pred < 1)).all()
    assert pnas.spearman(pred, [toy_accuracy(c) for c in three]) > 0.6


def test_spearman_degenerate_cases_are_nan():
    assert math.isnan(pnas.spearman([0.5], [0.1]))
    assert math.isnan(pnas.spearman([0.5, 0.5, 0.5], [0.1, 0.2, 0.3]))
    assert pnas.spearman([1, 2, 3], [10, 20, 30]) == pytest.approx(1.0)


# -- the loop -------------------------------------------------------------------------------
@pytest.mark.parametrize("blocks,beam", [(1, 3), (2, 3), (3, 4)])
def test_loop_trains_one_block_cells_plus_K_per_level(blocks, beam):
    config = tiny(blocks=blocks, beam=beam)
    trainer = FakeTrainer()
    result = pnas.search(config, train_fn=trainer, progress=False)
    expected = len(pnas.one_block_cells(TWO_OPS)) + (blocks - 1) * beam
    assert len(trainer.trained) == result.trained == expected
    assert len(set(trainer.trained)) == expected
    assert result.best["blocks"] == blocks
    for lv in result.levels[1:]:
        assert len(lv["beam"]) == beam and set(lv["spearman"]) == set(pnas.PREDICTORS)
        assert lv["candidates"] >= beam


def test_beam_children_carry_honest_predictions_and_random_baseline_matches_budget():
    config = tiny(random_baseline=True)
    result = pnas.search(config, train_fn=FakeTrainer(), progress=False)
    pnas_records, random_records = result.records("pnas"), result.records("random")
    assert len(random_records) == len(pnas_records)
    assert all(r["blocks"] == 3 for r in random_records)
    level3 = [r for r in pnas_records if r["blocks"] == 3]
    assert all(set(r["predicted"]) == set(pnas.PREDICTORS) for r in level3)
    rho = pnas.spearman([r["predicted"]["lstm"] for r in level3],
                        [r["accuracy"] for r in level3])
    assert rho == pytest.approx(result.levels[-1]["spearman"]["lstm"])
    assert set(result.holdout) == set(pnas.PREDICTORS)
    assert all(set(r["predicted"]) == set(pnas.PREDICTORS) for r in random_records)
    curve = result.best_so_far("pnas")
    assert len(curve) == len(pnas_records) and curve == sorted(curve)


def test_cache_never_retrains():
    config = tiny()
    cache = {}
    first = FakeTrainer()
    r1 = pnas.search(config, train_fn=first, cache=cache, progress=False)
    assert len(cache) == len(first.trained) == r1.trained
    second = FakeTrainer()
    r2 = pnas.search(config, train_fn=second, cache=cache, progress=False)
    assert second.trained == [] and r2.trained == 0
    assert r2.evaluated == r1.evaluated
    # A larger beam reuses the cached children and trains only the new ones.
    third = FakeTrainer()
    pnas.search(replace(config, beam=6), train_fn=third, cache=cache, progress=False)
    assert third.trained  # K=6 > 4: two more children per level
    assert all(pnas.cell_key(c) not in {r["key"] for r in r1.evaluated} for c in third.trained)


def test_resume_reaches_the_uninterrupted_result(tmp_path):
    config = tiny(random_baseline=True)
    straight = pnas.search(config, train_fn=FakeTrainer(), progress=False)
    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        pnas.search(config, train_fn=FakeTrainer(fail_after=13), run_dir=run, progress=False)
    saved = json.loads((run / "checkpoint.json").read_text())["children"]
    assert len(saved) == 14  # checkpointed per batch of workers=2, the interrupt lost none
    again = FakeTrainer()
    resumed = pnas.search(config, train_fn=again, run_dir=run, resume=True, progress=False)
    assert resumed.evaluated == straight.evaluated and resumed.levels == straight.levels
    assert len(again.trained) == straight.trained - 14
    with pytest.raises(ValueError, match="other settings"):
        pnas.search(replace(config, beam=2), train_fn=FakeTrainer(), run_dir=run, resume=True,
                    progress=False)


@pytest.mark.parametrize("bad,match", [
    (dict(beam=0), "beam"), (dict(blocks=0), "blocks"), (dict(blocks=99), "blocks"),
    (dict(ops=("sep_conv_3x3", "conv_9x9")), "unknown op"), (dict(ops=("none",)), "unknown op"),
    (dict(ops=()), "at least one"), (dict(predictor="gp"), "predictor"),
])
def test_bad_parameters_are_clear_errors(bad, match):
    with pytest.raises(ValueError, match=match):
        pnas.get_config("quick", **bad)


def test_cli_errors_exit_2(tmp_path, capsys):
    assert cli_main(["search", "pnas", "--preset", "quick", "--blocks", "99"]) == 2
    assert "blocks" in capsys.readouterr().err
    assert cli_main(["search", "pnas", "--preset", "quick", "--resume",
                     str(tmp_path / "missing")]) == 2
    with pytest.raises(SystemExit) as e:
        cli_main(["search", "pnas", "--beam", "0"])
    assert e.value.code == 2


def test_figures_build_from_a_result():
    from nas_tutorial import pnas_viz

    result = pnas.search(tiny(random_baseline=True), train_fn=FakeTrainer(), progress=False)
    fig = pnas_viz.plot_predictions(result)
    assert "Spearman" in fig.layout.annotations[0].text
    assert len(pnas_viz.plot_efficiency(result).data) == 2
    assert "cluster_level3" in pnas_viz.draw_beams(result).source


# -- real children --------------------------------------------------------------------------
def test_real_children_concurrent_equals_sequential_and_cli_writes_files(tmp_path, monkeypatch):
    config = replace(pnas.PNAS_PRESETS["quick"], blocks=2, beam=2, ops=("max_pool_3x3",),
                     fit_steps=10, embed=16, hidden=16, ensemble=2,
                     train=replace(pnas.PNAS_PRESETS["quick"].train, epochs=1))
    cells = pnas.one_block_cells(config.ops)  # 3 cells
    seq = pnas.ChildTrainer(config, "cpu", workers=1)(cells)
    par = pnas.ChildTrainer(config, "cpu", workers=3)(cells)
    assert seq == par and all(0.0 <= a <= 1.0 for a in seq) and max(seq) > 0.15
    monkeypatch.setitem(pnas.PNAS_PRESETS, "quick", config)
    out = tmp_path / "cli"
    assert cli_main(["search", "pnas", "--preset", "quick", "--out", str(out)]) == 0
    best = nt.Genotype.load(out / "best_cell.json")
    cells_json = json.loads((out / "cells.json").read_text())
    assert best.steps == 2 and len(cells_json["evaluated"]) == 2 * (3 + 2)
    assert (out / "predictions.html").exists() and (out / "pnas_vs_random.html").exists()
