"""SPOS: supernet vs stand-alone, FLOPs lookup, single-path updates, search operators,
BN recalibration, resume, budgets and the CLI."""
import json
import random
from dataclasses import replace

import pytest
import torch
from torch import nn

import nas_tutorial as nt
from nas_tutorial import spos
from nas_tutorial.cli import main

TINY = replace(spos.QUICK, name="tiny", stage_repeats=(1, 2, 1), stage_channels=(16, 24, 32),
               stem_channels=8, last_channels=32, image_size=8)
TINY_CS = replace(TINY, name="tiny-cs", channel_scales=(0.5, 1.0, 1.5))  # channel search
TINY_CFG = replace(spos.PRESETS["quick"], supernet=TINY, epochs=2, batch_size=16, lr=0.05,
                   recal_batches=2, recal_batch_size=16)


def _data(n=64, cfg=TINY, seed=0):
    return nt.data.synthetic(n, (cfg.in_channels, cfg.image_size, cfg.image_size), seed=seed)


def _paths(config, n, seed=0):
    rng = random.Random(seed)
    return [spos.random_path(config, rng) for _ in range(n)]


def _perturb_bn(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)


@pytest.mark.parametrize("config", [TINY, TINY_CS], ids=["blocks", "channel-search"])
def test_supernet_path_equals_standalone_with_copied_weights(config):
    torch.manual_seed(0)
    supernet = spos.Supernet(config).eval()
    _perturb_bn(supernet)
    x = torch.randn(4, config.in_channels, config.image_size, config.image_size)
    for path in _paths(config, 4) + [(config.num_choices - 1,) * config.num_layers]:
        alone = spos.standalone(supernet, path)
        assert alone.path == path and len(alone.layers[0]) == 1
        torch.testing.assert_close(alone(x), supernet(x, path), rtol=1e-5, atol=1e-5)


def test_forward_rejects_invalid_paths():
    supernet = spos.Supernet(TINY)
    x = torch.randn(2, 1, 8, 8)
    with pytest.raises(ValueError, match="path"):
        supernet(x)
    with pytest.raises(ValueError, match="choices"):
        supernet(x, (0, 1))
    with pytest.raises(ValueError, match="choices"):
        supernet(x, (4, 0, 0, 0))
    with pytest.raises(ValueError):
        spos.count_flops((0,) * 19, spos.IMAGENET)


def _weights(model):  # conv and linear weights: the paper's rule for params
    return sum(m.weight.numel() for m in model.modules()
               if isinstance(m, (nn.Conv2d, nn.Linear)))


@pytest.mark.parametrize("config", [TINY, TINY_CS, spos.QUICK], ids=lambda c: c.name)
def test_flops_and_params_lookup_equal_direct_count(config):
    for path in _paths(config, 3, seed=1):
        net = spos.Supernet(config, path)
        size = (config.in_channels, config.image_size, config.image_size)
        assert spos.count_flops(path, config) == nt.count_flops(net, size)
        assert spos.count_params(path, config) == _weights(net)
        bn = sum(p.numel() for m in net.modules() if isinstance(m, nn.BatchNorm2d)
                 for p in m.parameters())
        assert nt.count_params(net) == spos.count_params(path, config) + bn


def test_published_path_at_imagenet_config():
    path = spos.PUBLISHED_PATH
    flops, params = spos.count_flops(path), spos.count_params(path)
    assert flops == 322_918_720 and round(flops / 1e6) == 323  # paper: 323M
    assert params == 3_529_312 and round(params / 1e6, 1) == 3.5  # paper: 3.5M
    lo, hi = spos.space_range(spos.IMAGENET)["flops"]
    assert 265 < lo < 275 and 395 < hi < 405  # reference: roughly 270M to 400M


def test_flops_bin_sampling_lands_in_bins():
    rng = random.Random(0)
    edges = spos.flops_bins(spos.IMAGENET)
    assert edges == (290, 300, 310, 320, 330, 340, 350, 360)
    flops = [spos.count_flops(spos.sample_path(spos.IMAGENET, rng, uniform_flops=True))
             for _ in range(40)]
    assert sum(290e6 <= f <= 360e6 for f in flops) >= 38  # rejection fails only rarely


def test_only_sampled_blocks_change_in_a_training_step():
    torch.manual_seed(0)
    supernet = spos.Supernet(TINY)
    cfg = replace(TINY_CFG, weight_decay=0.1, amp=False)  # large decay: a leak would show
    opt = spos.make_optimizer(supernet, cfg)
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))
    first, second = (0, 1, 2, 3), (1, 1, 0, 3)
    spos.train_step(supernet, opt, x, y, first, cfg)  # momentum buffers for path `first`
    before = {k: v.clone() for k, v in supernet.state_dict().items()}
    spos.train_step(supernet, opt, x, y, second, cfg)
    after = supernet.state_dict()
    for name, p in supernet.named_parameters():
        moved = not torch.equal(before[name], after[name])
        if name.startswith("layers."):
            layer, block = int(name.split(".")[1]), int(name.split(".")[2])
            on_path = second[layer] == block
            assert moved == on_path, name
            assert (p.grad is not None) == on_path, name
        else:
            assert moved, name  # stem, head: on every path
    for name in before:  # unsampled blocks keep their BN statistics too
        if name.startswith("layers.") and "running_mean" in name:
            layer, block = int(name.split(".")[1]), int(name.split(".")[2])
            assert torch.equal(before[name], after[name]) == (second[layer] != block)


def test_weight_decay_only_on_multidim_weights():
    opt = spos.make_optimizer(spos.Supernet(TINY), TINY_CFG)
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == TINY_CFG.weight_decay and no_decay["weight_decay"] == 0
    assert all(p.ndim > 1 for p in decay["params"])
    assert all(p.ndim <= 1 for p in no_decay["params"])


def test_mutation_and_crossover_respect_budget_and_never_duplicate():
    config = spos.QUICK
    limit = 0.62  # MFLOPs: about a third of the space
    rng = random.Random(0)
    seen = set()

    def legal(path):
        if path in seen or not spos.within_budget(path, config, flops_limit=limit):
            return False
        seen.add(path)
        return True

    parents = spos.random_fill(6, config, rng, legal)
    assert len(parents) == 6
    kids = (spos.mutate(parents, 20, 0.3, config, rng, legal)
            + spos.crossover(parents, 20, config, rng, legal)
            + spos.random_fill(20, config, rng, legal))
    assert len(kids) >= 40
    assert len(set(kids)) == len(kids) and not set(kids) & set(parents)
    assert all(spos.count_flops(k, config) <= limit * 1e6 for k in kids)
    # a crossover child takes every gene from one of its two parents
    one = spos.crossover(parents[:1], 3, config, rng, lambda p: True)
    assert one == [parents[0]] * 3


def _fake_fitness(path):  # cheap and deterministic, for the search machinery
    return round(sum((i + 1) * c for i, c in enumerate(path)) % 17 / 17, 6)


def test_evolution_and_random_search_return_every_evaluated_path():
    kw = dict(flops_limit=0.7, seed=3, progress=False)
    evo = spos.evolution_search(_fake_fitness, spos.QUICK, population=10, generations=4,
                                topk=3, n_mutation=5, n_crossover=5, **kw)
    rnd = spos.random_search(_fake_fitness, spos.QUICK, spos.generation_sizes(evo), **kw)
    assert len(evo.evaluated) == len(rnd.evaluated) == 40
    for res in (evo, rnd):
        paths = [tuple(e["path"]) for e in res.evaluated]
        assert len(set(paths)) == len(paths)
        for e in res.evaluated:
            assert e["fitness"] == _fake_fitness(e["path"])
            assert e["flops"] == spos.count_flops(e["path"], spos.QUICK) <= 0.7e6
            assert e["params"] == spos.count_params(e["path"], spos.QUICK)
    assert {e["origin"] for e in evo.evaluated} == {"random", "mutation", "crossover"}
    best = [b for _, b in evo.best_per_generation()]
    assert best == sorted(best) and best[-1] == evo.best["fitness"]


def test_search_resume_equals_uninterrupted(tmp_path):
    kw = dict(population=8, generations=4, topk=3, n_mutation=4, n_crossover=4,
              flops_limit=0.7, seed=1, progress=False)
    full = spos.evolution_search(_fake_fitness, spos.QUICK, **kw)

    def stop(gen, result):
        if gen == 1:
            raise KeyboardInterrupt

    ckpt = tmp_path / "evolution.json"
    with pytest.raises(KeyboardInterrupt):
        spos.evolution_search(_fake_fitness, spos.QUICK, checkpoint=ckpt, callback=stop, **kw)
    assert json.loads(ckpt.read_text())["generation"] == 2
    resumed = spos.evolution_search(_fake_fitness, spos.QUICK, checkpoint=ckpt, **kw)
    assert resumed.evaluated == full.evaluated
    with pytest.raises(ValueError, match="other settings"):
        spos.evolution_search(_fake_fitness, spos.QUICK, checkpoint=ckpt, **{**kw, "seed": 2})


def test_supernet_training_resume_equals_uninterrupted(tmp_path):
    train = _data(64)
    torch.manual_seed(0)
    full = spos.Supernet(TINY)
    spos.train_supernet(full, train, TINY_CFG, "cpu", progress=False)

    def stop(history):
        raise KeyboardInterrupt

    ckpt = tmp_path / "supernet.pt"
    torch.manual_seed(0)
    with pytest.raises(KeyboardInterrupt):
        spos.train_supernet(spos.Supernet(TINY), train, TINY_CFG, "cpu", ckpt,
                            progress=False, callback=stop)
    assert torch.load(ckpt, weights_only=False)["epoch"] == 1
    torch.manual_seed(123)  # a fresh process: other init, all restored from the checkpoint
    resumed = spos.Supernet(TINY)
    hist = spos.train_supernet(resumed, train, TINY_CFG, "cpu", ckpt, progress=False)
    assert hist["epoch"] == [1, 2]
    for (k, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k


def test_bn_recalibration_changes_running_stats_and_fitness_is_cached():
    torch.manual_seed(0)
    supernet = spos.Supernet(TINY)
    train, valid = _data(64), _data(32, seed=1)
    spos.train_supernet(supernet, train, replace(TINY_CFG, epochs=1), "cpu", progress=False)
    ev = spos.PathEvaluator(supernet, train, valid, recal_batches=2, recal_batch_size=16)
    path = (0, 1, 2, 3)
    trained = {k: v.clone() for k, v in supernet.state_dict().items() if "running" in k}
    acc_on = ev.accuracy(path)
    changed = [k for k, v in trained.items() if not torch.equal(v, supernet.state_dict()[k])]
    assert any(k.startswith("stem") for k in changed)
    assert any(k.startswith("layers.1.1.") for k in changed)  # a block on the path
    assert not any(k.startswith("layers.1.0.") for k in changed)  # off the path: untouched
    # the mean of exactly the recalibration batches (momentum 1/(k+1))
    x = torch.cat(ev.recal)
    with torch.no_grad():
        stem_out = supernet.stem[0](x)
    torch.testing.assert_close(supernet.stem[1].running_mean, stem_out.mean((0, 2, 3)),
                               rtol=1e-4, atol=1e-5)
    acc_off = ev.accuracy(path, recalibrate=False)  # restores the trained statistics
    for k, v in trained.items():
        assert torch.equal(v, supernet.state_dict()[k]), k
    assert 0 <= acc_off <= 1 and 0 <= acc_on <= 1
    assert ev(path) == acc_on and path in ev.cache and ev(list(path)) == acc_on


def test_budget_errors():
    lo = spos.space_range(spos.QUICK)["flops"][0]
    with pytest.raises(ValueError, match="below the smallest path"):
        spos.check_budget(spos.QUICK, flops_limit=lo * 0.99)
    spos.check_budget(spos.QUICK, flops_limit=lo)  # the smallest path itself is fine
    with pytest.raises(ValueError, match="params limit"):
        spos.evolution_search(_fake_fitness, spos.QUICK, params_limit=0.001, progress=False)
    with pytest.raises(ValueError, match="flops limit"):
        spos.random_search(_fake_fitness, spos.QUICK, [4], flops_limit=0.1, progress=False)


@pytest.mark.parametrize("argv", [
    ["search", "spos", "--flops-limit", "0.001"],
    ["search", "spos", "--params-limit", "0.0001", "--preset", "quick"],
    ["search", "spos", "--preset", "quick", "--resume", "/nonexistent/spos-run"],
])
def test_cli_errors(argv, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("nas-tutorial: error:")


def test_cli_rejects_bad_flags():
    with pytest.raises(SystemExit) as e:
        main(["search", "spos", "--population", "0"])
    assert e.value.code == 2


def test_cli_search_writes_the_run_folder_and_resumes(tmp_path, monkeypatch, capsys):
    tiny_rgb = replace(TINY, in_channels=3)
    cfg = replace(TINY_CFG, supernet=tiny_rgb, dataset="synthetic", image_size=8,
                  batch_size=256, valid_images=64, flops_limit=None, topk=2, n_mutation=2,
                  n_crossover=2)
    monkeypatch.setitem(spos.PRESETS, "quick", cfg)
    out = tmp_path / "run"
    argv = ["search", "spos", "--preset", "quick", "--population", "4", "--generations", "2",
            "--out", str(out)]
    assert main(argv) == 0
    first = capsys.readouterr().out
    best = json.loads((out / "best_path.json").read_text())
    evaluated = json.loads((out / "evaluated.json").read_text())
    assert len(evaluated["evolution"]) == len(evaluated["random"]) == 8
    assert best["fitness"] == max(e["fitness"] for e in evaluated["evolution"])
    assert best["path"] in [e["path"] for e in evaluated["evolution"]]
    assert str(tuple(best["path"])) in first
    assert (out / "pareto.html").exists() and (out / "progress.html").exists()
    assert main(["search", "spos", "--preset", "quick", "--population", "4",
                 "--generations", "2", "--resume", str(out)]) == 0  # all from checkpoints
    assert capsys.readouterr().out.splitlines()[0] == first.splitlines()[0]
