"""The comparison: genotype agreement, the random DARTS genotype, the table on a tiny run,
the seed study, peak memory and recorded runs."""
import itertools
import json
import time
from dataclasses import replace

import pytest

import torch

import nas_tutorial as nt
from nas_tutorial import compare as cmp

G = nt.Genotype  # (normal, normal_concat, reduce, reduce_concat)
A = [("sep_conv_3x3", 0), ("skip_connect", 1), ("max_pool_3x3", 0), ("sep_conv_5x5", 2)]
CAT = [2, 3]


# -- genotype agreement ---------------------------------------------------------------------
def test_identical_genotypes_agree_everywhere():
    g = G(A, CAT, A, CAT)
    agree = cmp.genotype_agreement(g, g)
    assert agree == {"edges": 8, "ops": 8, "total": 8, "edge_fraction": 1.0, "op_fraction": 1.0}


def test_same_edges_other_ops():
    other = [("dil_conv_3x3", 0), ("skip_connect", 1), ("avg_pool_3x3", 0), ("sep_conv_5x5", 2)]
    agree = cmp.genotype_agreement(G(A, CAT, A, CAT), G(other, CAT, A, CAT))
    assert (agree["edges"], agree["ops"], agree["total"]) == (8, 6, 8)


def test_other_inputs_and_symmetry():
    # node 0 reads (0, 1) in a and (1, 1) in b: one input in common (multiset), node 1 none
    b = [("skip_connect", 1), ("skip_connect", 1), ("max_pool_3x3", 1), ("sep_conv_5x5", 1)]
    ga, gb = G(A, CAT, A, CAT), G(b, CAT, A, CAT)
    agree = cmp.genotype_agreement(ga, gb)
    assert (agree["edges"], agree["ops"]) == (1 + 0 + 4, 1 + 0 + 4)
    assert agree == cmp.genotype_agreement(gb, ga)


def test_order_within_a_node_does_not_matter_but_node_order_does():
    swapped = [A[1], A[0], A[2], A[3]]
    assert cmp.genotype_agreement(G(A, CAT, A, CAT), G(swapped, CAT, A, CAT))["ops"] == 8
    moved = [A[2], A[1], A[0], A[1]]  # the same pairs on other nodes: another cell
    assert cmp.genotype_agreement(G(A, CAT, A, CAT), G(moved, CAT, A, CAT))["ops"] == 1 + 4


def test_different_node_counts_count_against_the_larger():
    small = G(A[:2], [2], A[:2], [2])
    agree = cmp.genotype_agreement(small, G(A, CAT, A, CAT))
    assert (agree["ops"], agree["total"]) == (4, 8)


# -- the random DARTS genotype --------------------------------------------------------------
@pytest.mark.parametrize("steps,multiplier", [(4, 4), (3, 3), (2, 1)])
def test_random_genotype_is_in_the_darts_space(steps, multiplier):
    for seed in range(20):
        g = cmp.random_genotype(seed, steps, multiplier)
        assert g.steps == steps and g.normal_concat == tuple(range(2 + steps - multiplier,
                                                                    2 + steps))
        for cell in ("normal", "reduce"):
            for i, (a, b) in enumerate(g.nodes(cell)):
                assert a[1] != b[1] and 0 <= a[1] < 2 + i and 0 <= b[1] < 2 + i
                assert {a[0], b[0]} <= set(nt.DARTS_OPS) - {"none"}


def test_random_genotype_is_seeded_and_builds():
    assert cmp.random_genotype(3) == cmp.random_genotype(3)
    assert len({cmp.random_genotype(s) for s in range(10)}) == 10
    net = nt.NetworkCIFAR(cmp.random_genotype(0, 3, 3), 8, 10, 3, in_channels=1)
    assert net(torch.zeros(2, 1, 16, 16)).shape == (2, 10)


# -- the table on a tiny run ----------------------------------------------------------------
def tiny_config(seed=0):
    c = cmp.get_config("quick", seed=seed)
    return replace(
        c,
        pc_darts=replace(c.pc_darts, epochs=1, warmup_epochs=0, steps_per_epoch=1),
        spos=replace(c.spos, epochs=1, population=3, generations=2, topk=2, n_mutation=1,
                     n_crossover=1),
        # one op: 3 one-block cells, then the one child of the beam's single cell
        pnas=replace(c.pnas, ops=("max_pool_3x3",), blocks=2, beam=1, fit_steps=5,
                     compare_predictors=False,
                     train=replace(c.pnas.train, epochs=1, steps_per_epoch=1)),
        retrain=replace(c.retrain, epochs=1, steps_per_epoch=1))


@pytest.mark.fashion
def test_get_config_shares_the_seed_and_the_data():
    c = cmp.get_config("quick", seed=7)
    assert c.pc_darts.seed == c.spos.seed == c.pnas.seed == c.retrain.seed == 7
    assert c.pc_darts.dataset == c.spos.dataset == c.pnas.dataset == "fashion_mnist"


def test_compare_rows_have_every_column(tmp_path):
    rows, candidates = cmp.compare(tiny_config(), device="cpu", progress=False, out=tmp_path)
    assert [r["method"] for r in rows] == ["PC-DARTS", "PC-DARTS random", "SPOS",
                                            "SPOS random", "PNAS", "PNAS random"]
    for row in rows:
        assert set(row) == set(cmp.COLUMNS)
        assert 0.0 <= row["accuracy"] <= 1.0
        assert row["params"] > 0 and row["flops"] > 0 and row["peak_mem_mb"] >= 0
        assert row["device"].startswith("CPU")
    units = {r["method"]: r["cost_unit"] for r in rows}
    assert units["PC-DARTS"] == "search epochs" and units["SPOS"] == "supernet epochs"
    assert units["PNAS"] == units["PNAS random"] == "models trained"
    by = {r["method"]: r for r in rows}
    assert by["PNAS"]["cost"] == by["PNAS random"]["cost"] == 4  # equal budget
    assert by["SPOS"]["evaluated"] == by["SPOS random"]["evaluated"]
    assert by["PC-DARTS"]["search_s"] > 0 and by["PC-DARTS random"]["search_s"] == 0
    # the random PC-DARTS genotype is the seeded one, in the searched space (3 nodes)
    assert candidates[1].architecture == cmp.random_genotype(0, 3, 3)
    # the SPOS row is its path's stand-alone network: params match the lookup table
    path = candidates[2].architecture
    assert by["SPOS"]["params"] == nt.count_params(nt.spos.Supernet(nt.spos.QUICK, path))
    assert "PC-DARTS" in cmp.format_table(rows).splitlines()[2]
    fig = cmp.plot_table(rows)
    assert len(fig.data) == len(rows)


def test_compare_resumes_from_its_folder(tmp_path):
    rows, _ = cmp.compare(tiny_config(), device="cpu", progress=False, out=tmp_path)
    assert json.loads((tmp_path / "compare.json").read_text())["rows"] == rows
    # interrupted while retraining: the last three rows and the random SPOS search are lost
    (tmp_path / "compare.json").write_text(json.dumps({"rows": rows[:3]}))
    (tmp_path / "spos" / "random.json").unlink()
    again, _ = cmp.compare(tiny_config(), device="cpu", progress=False, out=tmp_path)
    same = [c for c in cmp.COLUMNS if c not in ("search_s", "peak_mem_mb")]
    assert [{c: r[c] for c in same} for r in again] == [{c: r[c] for c in same} for r in rows]
    assert again[:3] == rows[:3]  # finished rows are read back, not retrained


def test_seed_study_counts_pairs():
    cfg = tiny_config().pc_darts
    study = cmp.seed_study(cfg, seeds=(0, 1, 2), edge_norm=(False,), device="cpu",
                           progress=False)
    assert len(study["runs"]) == 3 and len(study["pairs"]) == 3
    assert all(r["accuracy"] == r["search_accuracy"] for r in study["runs"])
    assert [p["seeds"] for p in study["pairs"]] == list(itertools.combinations((0, 1, 2), 2))
    s = study["summary"][False]
    assert 0 <= s["op_agreement"] <= s["edge_agreement"] <= 1
    assert 1 <= s["distinct_genotypes"] <= 3 and s["accuracy_std"] >= 0
    assert len(cmp.plot_seed_study(study).data) > 0


def test_seed_study_retrains_when_asked():
    c = tiny_config()
    study = cmp.seed_study(c.pc_darts, seeds=(0,), edge_norm=(True,), retrain=c.retrain,
                           preset="quick", device="cpu", progress=False)
    (run,) = study["runs"]
    net = cmp.cell_network(run["genotype"], "quick", 10, 1, c.retrain.seed)
    train_ds, test_ds = cmp.retrain_data("quick")
    nt.train(net, train_ds, c.retrain, device="cpu", progress=False)
    assert run["accuracy"] == nt.evaluate(net, test_ds, "cpu")[1]  # reproducible on CPU


# -- measuring and recorded runs ------------------------------------------------------------
def test_peak_memory_sees_an_allocation():
    # freed at once: only the kernel's peak counter (Linux) is sure to see it
    with cmp.PeakMemory("cpu") as mem:
        x = torch.ones(64 * 2 ** 20 // 4)  # 64 MB, touched
        del x
    if not mem._kernel_peak:
        pytest.skip("no resettable peak-RSS counter here (not Linux)")
    assert 60 < mem.mb < 100


def test_peak_memory_sampling_fallback_sees_a_held_allocation(monkeypatch):
    monkeypatch.setattr(cmp, "_reset_peak_rss", lambda: False)
    with cmp.PeakMemory("cpu", interval=0.002) as mem:
        x = torch.ones(64 * 2 ** 20 // 4)
        time.sleep(0.1)  # many sampling intervals: the sampler cannot miss it
        del x
    assert not mem._kernel_peak and mem.mb > 40


def test_recorded_rows_carry_device_and_date(tmp_path):
    assert cmp.recorded_rows(root=tmp_path) == []
    row = {c: 1 for c in cmp.COLUMNS} | {"method": "PNAS", "device": "x"}
    cmp.record([row], root=tmp_path, device="cpu")
    rec = cmp.recorded_rows(root=tmp_path)
    assert len(rec) == 1 and rec[0]["device"].startswith("CPU") and len(rec[0]["recorded"]) == 10


# -- found cells against the table ------------------------------------------------------------
def test_best_of_n_matches_simulation_and_grows_with_n():
    import numpy as np

    values = [0.1, 0.2, 0.3, 0.4, 0.5]
    exact = cmp.best_of_n(values, 3)
    rng = np.random.default_rng(0)
    sim = rng.choice(values, size=(200_000, 3)).max(1)
    assert exact["mean"] == pytest.approx(sim.mean(), abs=2e-3)
    for key, q in (("q5", 0.05), ("q50", 0.5), ("q95", 0.95)):
        assert exact[key] == float(np.quantile(sim, q, method="inverted_cdf")), key
    assert cmp.best_of_n(values, 1)["mean"] == pytest.approx(0.3)
    means = [cmp.best_of_n(values, n)["mean"] for n in (1, 2, 5, 24)]
    assert means == sorted(means) and means[-1] < 0.5 + 1e-12
    with pytest.raises(ValueError, match="at least 1"):
        cmp.best_of_n(values, 0)
    assert cmp.equal_budget_draws(100, 100) == 2 and cmp.equal_budget_draws(0, 50) == 1
    assert cmp.equal_budget_draws(149, 100) == 2  # whole trainings only
    with pytest.raises(ValueError):
        cmp.equal_budget_draws(10, 0)


def test_random_search_selects_on_one_training_and_scores_another():
    """Random search is scored as a found cell is: the pick's *other* training. Checked
    against a simulation, and below the optimistic best-of-n of the same trainings."""
    import numpy as np

    from nas_tutorial.run import tables

    acc = [(0.70, 0.80), (0.78, 0.72), (0.75, 0.76), (0.60, 0.65)]
    rows = [{"key": f"r{i}", "group": "random", "arch": {}, "accuracy": list(a)}
            for i, a in enumerate(acc)]
    table = tables.Table("pc-darts", {"seeds": [0, 1]}, rows)
    exact = cmp.random_search(table, 3)
    rng = np.random.default_rng(0)
    a = np.array(acc)
    picks = rng.integers(0, 4, size=(200_000, 3))
    sel = rng.integers(0, 2, size=200_000)
    chosen = picks[np.arange(len(picks)), a[picks, sel[:, None]].argmax(1)]
    sim = a[chosen, 1 - sel]
    assert exact["mean"] == pytest.approx(sim.mean(), abs=2e-3)
    assert exact["mean"] < cmp.best_of_n(table.trainings(), 3)["mean"]
    assert cmp.random_search(table, 1)["mean"] == pytest.approx(a.mean())
    one_seed = tables.Table("pc-darts", {"seeds": [0]}, [{**r, "accuracy": r["accuracy"][:1]}
                                                          for r in rows])
    with pytest.raises(ValueError, match="two seeds"):
        cmp.random_search(one_seed, 3)


def test_seed_study_summary_of_recorded_runs():
    """Recorded runs (genotypes as dicts) summarize as live ones: identical genotypes
    agree fully, and the accuracy spread is that of the runs."""
    g = nt.GENOTYPES["PC_DARTS"]
    other = nt.GENOTYPES["DARTS_V2"]
    runs = [{"edge_norm": True, "seed": s, "genotype": g.to_dict(), "accuracy": a}
            for s, a in ((0, 0.70), (1, 0.72))]
    runs += [{"edge_norm": False, "seed": 0, "genotype": g, "accuracy": 0.6},
             {"edge_norm": False, "seed": 1, "genotype": other, "accuracy": 0.8}]
    study = cmp.summarize_seed_study(runs)
    on, off = study["summary"][True], study["summary"][False]
    assert on["edge_agreement"] == on["op_agreement"] == 1.0 and on["distinct_genotypes"] == 1
    assert on["accuracy_range"] == pytest.approx(0.02)
    assert off["distinct_genotypes"] == 2 and off["op_agreement"] < 1.0
    assert off["op_agreement"] == cmp.genotype_agreement(g, other)["op_fraction"]
    assert len(cmp.plot_seed_study(study).data) > 0


def test_placement_figure_draws_every_seed():
    from nas_tutorial.run import tables

    rows = [{"key": f"r{i}", "group": "random", "arch": {}, "accuracy": [a, a + 0.01]}
            for i, a in enumerate((0.5, 0.6, 0.7))]
    table = tables.Table("pc-darts", {"seeds": [0, 1]}, rows)
    runs = [{"seed": s, "retrain_accuracy": a, "reference_percentile": table.percentile(a)}
            for s, a in ((0, 0.55), (1, 0.65))]
    fig = cmp.plot_placement(table, {"warm-up": runs}, best_of=2)
    xs = [list(t.x) for t in fig.data]
    assert [0.55, 0.65] in xs and sorted(table.trainings()) == sorted(xs[0])


def test_an_effect_over_seeds_comes_with_its_interval():
    """The mean difference over seeds with a 95% bootstrap interval, which says when it
    holds zero; the same call gives the same interval."""
    clear = cmp.interval([0.010, 0.012, 0.008, 0.011, 0.009] * 4)
    assert clear["n"] == 20 and clear["low"] > 0 and not clear["holds_zero"]
    assert clear["low"] <= clear["mean"] <= clear["high"] and clear["mean"] == pytest.approx(0.01)
    noise = cmp.interval([0.01, -0.012, 0.004, -0.006, 0.002, -0.001] * 3)
    assert noise["holds_zero"] and noise == cmp.interval([0.01, -0.012, 0.004, -0.006, 0.002,
                                                          -0.001] * 3)


@pytest.mark.fashion
def test_pnas_is_judged_against_random_by_the_table_truth():
    study = cmp.pnas_truth_study(seeds=range(2), progress=False)
    table = nt.groundtruth.load("pnas")
    for row in study["rows"]:
        assert row["difference"] == pytest.approx(row["best_truth"] - row["random_best_truth"])
        assert min(table.accuracy(r["key"]) for r in table.rows) <= row["best_truth"]
    assert study["difference"]["n"] == 2 and set(study["spearman_unseen"]) == {"2", "3"}


def test_the_intervals_figure_greys_the_effects_that_hold_zero():
    fig = cmp.plot_intervals({"A": {"mean": 0.01, "low": 0.004, "high": 0.02, "n": 20},
                              "B": {"mean": 0.001, "low": -0.003, "high": 0.004, "n": 20}})
    by_label = {t.y[0]: t for t in fig.data}
    assert set(by_label) == {"A", "B"}
    assert by_label["B"].marker.color == "#888888" != by_label["A"].marker.color
    assert list(by_label["A"].error_x.array) == [pytest.approx(0.01)]


def test_the_spos_study_judges_both_searches_by_trainings_they_did_not_see(tmp_path):
    """Each search seed's two picks are judged by the mean of their stand-alone trainings;
    a pick two seeds share is trained once, and a stopped study resumes from its cache."""
    from dataclasses import replace

    from nas_tutorial import spos

    tiny = replace(spos.QUICK, name="tiny", stage_repeats=(1, 2, 1), stage_channels=(16, 24, 32),
                   stem_channels=8, last_channels=32, image_size=8)
    cfg = replace(spos.PRESETS["quick"], supernet=tiny, population=4, generations=2, topk=2,
                  n_mutation=2, n_crossover=2, flops_limit=None)
    calls = []

    def train_path(path, seed):
        calls.append((tuple(path), seed))
        return 0.5 + 0.01 * sum(path) + 0.001 * seed

    fitness = lambda path: 0.1 * sum(path) - 0.3 * path[0]  # noqa: E731  (not the truth)
    cache = tmp_path / "picks.json"
    study = cmp.spos_truth_study(fitness, cfg, train_path, seeds=range(3), train_seeds=2,
                                 cache=cache, progress=False)
    picks = {tuple(r[k]) for r in study["rows"] for k in ("evolution_path", "random_path")}
    assert sorted(calls) == sorted((p, s) for p in picks for s in range(2))  # each pick once
    for r in study["rows"]:
        truth = 0.5 + 0.01 * sum(r["evolution_path"]) + 0.0005
        assert r["best_truth"] == pytest.approx(truth)
        assert r["difference"] == pytest.approx(r["best_truth"] - r["random_best_truth"])
    assert study["difference"]["n"] == 3 and study["evaluations"] == 8
    again = cmp.spos_truth_study(fitness, cfg, train_path, seeds=range(3), train_seeds=2,
                                 cache=cache, progress=False)
    assert len(calls) == 2 * len(picks) and again["rows"] == study["rows"]


def test_random_search_judged_by_the_seeds_that_did_not_pick():
    """Selecting on one seed and reporting the mean of the others: a row lucky on one seed
    only is picked by that seed and judged by the rest."""
    from nas_tutorial.groundtruth import Table

    rows = [{"key": "lucky", "group": "random", "arch": [0], "accuracy": [0.9, 0.5, 0.5, 0.5]},
            {"key": "good", "group": "random", "arch": [1], "accuracy": [0.7, 0.7, 0.7, 0.7]}]
    table = Table("pc-darts", {"seeds": [0, 1, 2, 3]}, rows)
    r = cmp.random_search(table, 2, report="others")
    # n=2 draws with replacement: "lucky" is among them with probability 3/4, and so is
    # "good". Seed 0 picks "lucky" when drawn, judged by seeds 1-3 (0.5), else "good" (0.7);
    # seeds 1-3 pick "good" when drawn (0.7), else "lucky", judged by the other three seeds
    seed0 = 0.75 * 0.5 + 0.25 * 0.7
    others = 0.75 * 0.7 + 0.25 * (0.9 + 0.5 + 0.5) / 3
    want = (seed0 + 3 * others) / 4
    assert r["mean"] == pytest.approx(want)
    with pytest.raises(ValueError, match="report must be"):
        cmp.random_search(table, 2, report="mean")
