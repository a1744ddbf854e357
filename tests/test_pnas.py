"""PNAS: the cell space, the surrogates, the progressive loop, caching, resume and the CLI.

Loop tests use a fake, deterministic trainer (a function of the cell) so they run in
milliseconds; one test trains real children on digits.
"""
import json
import math
import re
import zlib
from dataclasses import replace

import numpy as np
import pytest

import nas_tutorial as nt
from nas_tutorial import pnas
from nas_tutorial.run.cli import main as cli_main

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
        assert len(lv["beam"]) == beam
        assert set(lv["spearman"]["selected"]) == set(pnas.PREDICTORS)
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
    assert rho == pytest.approx(result.levels[-1]["spearman"]["selected"]["lstm"])
    assert "random" not in result.levels[-1]["spearman"]  # no table matches the fake trainer
    curve = result.best_so_far("pnas")
    assert len(curve) == len(pnas_records) and curve == sorted(curve)
    # The efficiency curve counts only 3-block cells: NaN until PNAS reaches b = 3.
    curve3 = result.best_so_far("pnas", blocks=3)
    first3 = next(k for k, r in enumerate(pnas_records) if r["blocks"] == 3)
    assert all(math.isnan(x) for x in curve3[:first3]) and curve3[-1] == max(
        r["accuracy"] for r in level3)


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
    with pytest.raises(SystemExit) as e:  # refused by the parser, before any work
        cli_main(["search", "pnas", "--preset", "quick", "--blocks", "99"])
    assert e.value.code == 2 and "blocks" in capsys.readouterr().err
    assert cli_main(["search", "pnas", "--preset", "quick", "--resume",
                     str(tmp_path / "missing")]) == 2
    with pytest.raises(SystemExit) as e:
        cli_main(["search", "pnas", "--beam", "0"])
    assert e.value.code == 2


def test_figures_build_from_a_result():
    from nas_tutorial import pnas_viz

    result = pnas.search(tiny(random_baseline=True), train_fn=FakeTrainer(), progress=False)
    fig = pnas_viz.plot_predictions(result)
    assert "rho: random n/a, picked" in fig.layout.annotations[0].text
    assert len(pnas_viz.plot_efficiency(result).data) == 2
    config = tiny(oracle="table", random_baseline=True)
    results = pnas.study(config, seeds=[0, 1], table=fake_table(config), progress=False)
    assert "rho: random" in pnas_viz.plot_predictions(results[0]).layout.annotations[0].text
    assert len(pnas_viz.plot_efficiency_study(results, seed_sd=0.01).data) == 4
    assert len(pnas_viz.plot_spearman_study(results).data) == 2 * len(pnas.PREDICTORS)
    assert "cluster_level3" in pnas_viz.draw_beams(result).source


# -- the table oracle -------------------------------------------------------------------------
def fake_table(config, n_three=600, seeds=2, protocol=None):
    """A pnas table for ``config``'s children: all 1- and 2-block cells and ``n_three``
    random 3-block cells, accuracy = toy accuracy + a seed-dependent jitter."""
    from nas_tutorial.run import tables

    one = pnas.one_block_cells(config.ops)
    cells = one + pnas.expand_all(one, config.ops) + pnas.random_cells(n_three, 3, config.ops, 7)
    rows = [{"key": pnas.cell_key(c), "group": f"{len(c) // 2}-block", "arch": [list(p) for p in c],
             "accuracy": [round(toy_accuracy(c) + 0.01 * ((zlib.crc32(pnas.cell_key(c).encode())
                                                             >> s) % 7 - 3) / 3, 6)
                          for s in range(seeds)]} for c in cells]
    header = {"protocol": protocol or json.loads(json.dumps(pnas.child_protocol(config))),
              "seeds": list(range(seeds))}
    return tables.Table("pnas", header, rows)


def test_table_oracle_reads_one_recorded_seed_per_search_seed_and_trains_nothing():
    config = tiny(oracle="table", random_baseline=True, beam=6)
    table = fake_table(config)
    for seed, table_seed in ((0, 0), (1, 1), (2, 0)):
        result = pnas.search(replace(config, seed=seed), table=table, progress=False,
                             train_fn=lambda cells: pytest.fail("the table oracle trains nothing"))
        assert result.table_seed == table_seed
        for r in result.evaluated:
            assert r["accuracy"] == table.accuracy(r["key"], table_seed)
    # Level 3 chooses among the tabulated children only; random search draws tabulated cells.
    three = {pnas.cell_key(c) for c in pnas.TableOracle(config, table).cells(3)}
    assert result.levels[2]["candidates"] < len(pnas.expand_all(
        [pnas.canonical(tuple(tuple(p) for p in r["cell"])) for r in result.records()
         if r["blocks"] == 2], config.ops))
    assert {r["key"] for r in result.records() if r["blocks"] == 3} <= three
    assert {r["key"] for r in result.records("random")} <= three
    assert len(result.records("random")) == len(result.records("pnas"))


def test_predictors_are_scored_on_random_unseen_cells_against_the_table_mean():
    config = tiny(oracle="table", fit_steps=150, ensemble=3, embed=32, hidden=32)
    table = fake_table(config)
    result = pnas.search(config, table=table, progress=False)
    for lv in result.levels[1:]:
        ref = lv["reference"]
        assert len(ref["keys"]) == (165 if lv["blocks"] == 2 else 600)
        assert ref["truth"] == [table.accuracy(k) for k in ref["keys"]]  # mean over seeds
        for kind in pnas.PREDICTORS:
            rho = pnas.spearman(ref["predicted"][kind], ref["truth"])
            assert rho == pytest.approx(lv["spearman"]["random"][kind], abs=1e-3)
            assert rho > 0.5  # the toy accuracy (share of sep convs) is learnable


def test_summary_has_the_contract_keys_and_is_strict_json():
    config = tiny(oracle="table", random_baseline=True)
    result = pnas.search(config, table=fake_table(config), progress=False)
    s = pnas.summary(result)
    assert {"seed", "oracle", "models_trained", "best_accuracy", "random_best_accuracy",
            "spearman"} <= set(s)
    assert s["models_trained"] == 10 + 2 * 4 and s["oracle"] == "table"
    assert s["best_accuracy"] == max(r["accuracy"] for r in result.records()
                                     if r["blocks"] == 3)
    assert set(s["spearman"]) == {"lstm", "mlp_ensemble"}
    assert set(s["spearman"]["lstm"]["random"]) == {"2", "3"} == set(
        s["spearman"]["mlp_ensemble"]["selected"])
    json.loads(json.dumps(s, allow_nan=False))


def test_study_runs_one_search_per_seed():
    config = tiny(oracle="table", random_baseline=True)
    results = pnas.study(config, seeds=[0, 1, 2], table=fake_table(config), progress=False)
    assert [r.config.seed for r in results] == [0, 1, 2]
    assert all(r.config.oracle == "table" for r in results)


def test_checkpoints_from_before_the_oracle_still_resume(tmp_path):
    config = tiny()
    run = tmp_path / "run"
    pnas.search(config, train_fn=FakeTrainer(), run_dir=run, progress=False)
    state = json.loads((run / "checkpoint.json").read_text())
    del state["config"]["oracle"]  # as written before oracle= existed
    (run / "checkpoint.json").write_text(json.dumps(state))
    again = FakeTrainer()
    pnas.search(config, train_fn=again, run_dir=run, resume=True, progress=False)
    assert again.trained == []


def test_a_table_oracle_deeper_than_the_table_is_refused():
    config = tiny(oracle="table", blocks=4)
    with pytest.raises(pnas.TableMissing, match="up to 3 blocks"):
        pnas.search(config, table=fake_table(config), progress=False)


def test_a_table_of_other_children_is_refused():
    config = tiny(oracle="table")
    other = fake_table(config, protocol={"dataset": "cifar10"})
    with pytest.raises(pnas.TableMissing, match="oracle='train'"):
        pnas.search(config, table=other, progress=False)
    with pytest.raises(ValueError, match="oracle"):
        tiny(oracle="guess")


def test_cli_table_oracle_without_a_matching_table_is_one_line_and_no_folder(tmp_path, capsys):
    out = tmp_path / "run"  # the quick preset is patched to digits here: no table matches it
    assert cli_main(["search", "pnas", "--preset", "quick", "--oracle", "table",
                     "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "table" in err and not out.exists()


@pytest.mark.fashion
def test_shipped_table_drives_the_quick_search_through_the_cli(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli_main(["search", "pnas", "--preset", "quick", "--oracle", "table",
                     "--seed", "3", "--out", str(out)]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["seed"] == 3 and s["method"] == "pnas"
    s = s["results"]
    seeds = nt.groundtruth.load("pnas").seeds
    assert s["oracle"] == "table" and s["table_seed"] == seeds[3 % len(seeds)]
    assert s["best_truth"] is not None and s["random_best_truth"] is not None  # judged by
    assert s["seed"] == 3  # the table's seed mean, a truth the search did not see
    assert s["models_trained"] == 10 + 2 * pnas.PNAS_PRESETS["quick"].beam
    assert s["random_best_accuracy"] is not None
    assert "random search" in capsys.readouterr().out


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
    from nas_tutorial.run.folders import RUN_FILES

    written = {p.name for p in out.iterdir()}
    assert written <= set(RUN_FILES["pnas"]), written - set(RUN_FILES["pnas"])


def test_cli_resume_continues_with_the_saved_settings_and_refuses_contradictions(tmp_path,
                                                                                capsys):
    """A finished run (children from the fake trainer) resumes from its checkpoint alone:
    every child is cached, so nothing trains; a contradicting flag or a damaged checkpoint
    is refused in one line and the files stay as they were."""
    config = tiny(blocks=2, beam=2, seed=3, random_baseline=True)
    out = tmp_path / "run"
    done = pnas.search(config, train_fn=FakeTrainer(), run_dir=out, progress=False)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    for flags, words in [(["--beam", "3"], "--beam 3 contradicts"),
                         (["--seed", "0"], "(it was made with seed=3, not 0)"),
                         (["--out", str(tmp_path / "b")], "--out cannot go with --resume")]:
        assert cli_main(["search", "pnas", "--resume", str(out), *flags]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and words in err[0]
        assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert cli_main(["search", "pnas", "--resume", str(out), "--blocks", "2",
                     "--device", "cpu"]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["seed"] == 3 and s["results"]["best_cell"] == done.best["key"]


def test_a_diverged_child_stops_the_search_and_keeps_the_checkpoint(tmp_path):
    """A child whose training meets a NaN: the search stops (no 'best' cell from chance-level
    children), naming the child and the checkpoint of the children trained before it."""
    class Diverging(FakeTrainer):
        def __call__(self, cells):
            if len(self.trained) >= 4:
                raise nt.training.diverged(f"PNAS child {pnas.cell_key(cells[0])}", 2, "loss",
                                           hint="a lower lr than 1e+12")
            return super().__call__(cells)

    out = tmp_path / "run"
    with pytest.raises(nt.training.Diverged) as caught:
        pnas.search(tiny(), train_fn=Diverging(), run_dir=out, progress=False)
    message = str(caught.value)
    assert "\n" not in message and message.startswith("PNAS child ")
    assert message.endswith(f"diverged in epoch 2: NaN/Inf in the loss; the last good checkpoint "
                            f"(4 children, {out / 'checkpoint.json'}) is kept; try a lower lr "
                            f"than 1e+12")
    assert len(json.loads((out / "checkpoint.json").read_text())["children"]) == 4


def test_a_real_child_with_a_huge_lr_raises_diverged_naming_it():
    config = replace(pnas.PNAS_PRESETS["quick"], ops=("max_pool_3x3",), workers=1,
                     train=replace(pnas.PNAS_PRESETS["quick"].train, epochs=1, lr=1e12,
                                   grad_clip=1e30))
    cell = pnas.one_block_cells(config.ops)[0]
    with pytest.raises(nt.training.Diverged, match=re.escape(
            f"PNAS child {pnas.cell_key(cell)} diverged in epoch 1: NaN/Inf")):
        pnas.ChildTrainer(config, "cpu")([cell])


def test_ctrl_c_stops_the_children_in_flight(monkeypatch):
    """Ctrl-C while children train side by side: the others stop at their next step (they
    watch training.STOP), not after their whole training; the flag is cleared afterwards."""
    import time

    from nas_tutorial import training

    trainer = pnas.ChildTrainer(pnas.get_config("quick"), "cpu", workers=2)
    stopped = []

    def fake(model, seed, slot, cell):
        if slot == 0:
            time.sleep(0.2)
            raise KeyboardInterrupt
        t0 = time.perf_counter()
        while not training.STOP.is_set() and time.perf_counter() - t0 < 30:
            time.sleep(0.01)  # a long training, one step at a time
        stopped.append(time.perf_counter() - t0)
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer, "_train_one", fake)
    cells = pnas.random_cells(2, 1, trainer.config.ops, seed=0)
    t0 = time.perf_counter()
    with pytest.raises(KeyboardInterrupt):
        trainer(cells)
    assert time.perf_counter() - t0 < 5 and stopped and stopped[0] < 5
    assert not training.STOP.is_set()


@pytest.mark.parametrize("kind", pnas.PREDICTORS)
def test_a_diverging_surrogate_stops_the_search_before_it_ranks_anything(kind, tmp_path,
                                                                          monkeypatch):
    """Issue 29: a fit at an absurd learning rate gave NaN predictions that ranked the
    children (a different best cell, exit 0, bare NaN in cells.json). It stops in one line,
    naming the surrogate and the kept checkpoint, before any child is chosen by a NaN. (The
    MLP ensemble reaches NaN at this lr for real; the LSTM's gates saturate instead, so its
    NaN is planted.)"""
    if kind == "lstm":
        monkeypatch.setattr(pnas.Surrogate, "predict", lambda self, cells: np.full(len(cells),
                                                                                 np.nan))
    out, trainer = tmp_path / "run", FakeTrainer()
    with pytest.raises(nt.training.Diverged) as caught:
        pnas.search(tiny(predictor=kind, fit_lr=1e12, compare_predictors=False),
                    train_fn=trainer, run_dir=out, progress=False)
    message = str(caught.value)
    ones = len(pnas.one_block_cells(TWO_OPS))
    assert "\n" not in message
    assert message.startswith(f"the {kind} surrogate (fit_lr 1e+12) diverged: NaN/Inf in the "
                              f"predictions; the last good checkpoint ({ones} children, ")
    assert message.endswith("try a lower fit_lr")
    assert len(trainer.trained) == ones  # the one-block cells only: none ranked by a NaN
