"""Data parallelism under torchrun, on CPU with gloo and 2 processes.

One torchrun launch (``tests/distributed_worker.py``, about 15 s) trains, searches and
checkpoints on 2 ranks; the tests compare what each rank holds with one process computing
the same steps written out here independently: every global batch split into the same 2
shards, each shard through the network on its own (BatchNorm with the shard's statistics,
as on a rank), the shards' gradients averaged. A second launch resumes a stopped 2-process
search through the CLI. Both launches are shared by the tests of this module.
"""
import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import distributed_worker as w
import nas_tutorial as nt
from nas_tutorial.fast import pc_darts as fpc
from nas_tutorial import distributed, pc_darts, pnas, spos
from nas_tutorial.run.cli import main as cli_main
from nas_tutorial.data import DeviceLoader

ROOT = Path(__file__).resolve().parent.parent
TOL = dict(atol=1e-5, rtol=1e-4)  # float32, a few steps: only the order of sums differs


def torchrun(*args, timeout=300):
    """``torchrun --standalone --nproc_per_node=2 ARGS`` (a free port of its own), one CPU
    thread per process; its output when it fails."""
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           f"--nproc_per_node={w.W}", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.fixture(autouse=True)
def _one_thread():
    # The references are thousands of tiny ops: on a busy 2-core machine a second OpenMP
    # thread makes them several times slower (README, Troubleshooting).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("distributed")
    torchrun(str(ROOT / "tests" / "distributed_worker.py"), str(out))
    ranks = [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(w.W)]
    return out, ranks


def assert_same_params(got: dict, want: dict):
    assert got.keys() == want.keys()
    for k in want:
        torch.testing.assert_close(got[k], want[k], **TOL, msg=k)


def mean_grad(model, x, y, params, shards=w.W, forward=None):
    """The mean over ``shards`` shards of the batch of each shard's gradient: what averaging
    over ranks computes."""
    forward = forward or model
    per = [torch.autograd.grad(F.cross_entropy(forward(xs), ys), params)
           for xs, ys in zip(x.chunk(shards), y.chunk(shards))]
    return [torch.stack(g).mean(0) for g in zip(*per)]


# -- training ----------------------------------------------------------------------------
def reference_train(shards):
    cfg, model, data = w.TRAIN, w.train_model(), w.train_data()
    model.to(memory_format=torch.channels_last)
    loader = DeviceLoader(data, cfg.batch_size, train=True, seed=cfg.seed, cutout=cfg.cutout,
                          channels_last=True)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                          weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, cfg.epochs, eta_min=cfg.lr_min)
    params, losses = list(model.parameters()), []
    for epoch in range(cfg.epochs):
        model.train()
        total = n = 0
        for step, (x, y) in enumerate(loader):
            if step == cfg.steps_per_epoch:
                break
            for p, g in zip(params, mean_grad(model, x, y, params, shards)):
                p.grad = g
            with torch.no_grad():
                total += sum(F.cross_entropy(model(xs), ys).item() * len(ys)
                             for xs, ys in zip(x.chunk(shards), y.chunk(shards)))
            n += len(y)
            nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            opt.step()
        sched.step()
        losses.append(total / n)
    return w.params(model), losses


def test_training_on_2_ranks_equals_one_process_over_the_same_global_batches(run):
    _, ranks = run
    want, losses = reference_train(shards=2)
    for r in ranks:
        assert r["world_size"] == 2
        assert_same_params(r["train"]["params"], want)
        assert r["train"]["loss"] == pytest.approx(losses, rel=1e-4)  # the whole global batch
    # Per-rank BatchNorm is a real difference: one BN call over the whole batch trains other
    # weights, so the comparison above could not pass by accident.
    whole, _ = reference_train(shards=1)
    assert not all(torch.allclose(whole[k], want[k], **TOL) for k in want)


# -- PC-DARTS / DARTS ----------------------------------------------------------------------
def reference_search(cfg, shards=w.W):
    """PC-DARTS's loop (first order, or DARTS's unrolled step, Eq. 7-8) over shards."""
    torch.manual_seed(cfg.seed)
    data = nt.data.load(cfg.dataset, train=True, size=cfg.image_size, n=cfg.train_images)
    train_ds, valid_ds = nt.data.split(data, cfg.train_portion, seed=cfg.seed)
    cl = pc_darts.uses_channels_last(cfg, "cpu")
    tl = DeviceLoader(train_ds, cfg.batch_size, seed=cfg.seed, drop_last=True, channels_last=cl)
    vl = DeviceLoader(valid_ds, cfg.batch_size, seed=cfg.seed + 1, drop_last=True,
                      channels_last=cl)
    model = pc_darts.SearchNetwork(cfg.C, data.num_classes, cfg.layers, cfg.k, cfg.edge_norm,
                                   cfg.steps, cfg.multiplier, in_channels=data.shape[0],
                                   fast=True, fused=fpc.uses_fused_cells(cfg, "cpu"))
    if cl:  # the supernet the search runs (its fused optimizers: the same update, to rounding)
        model.to(memory_format=torch.channels_last)
    weights, arch = model.weight_parameters(), model.arch_parameters()
    w_opt = torch.optim.SGD(weights, lr=cfg.lr, momentum=cfg.momentum,
                            weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(w_opt, cfg.epochs, eta_min=cfg.lr_min)
    a_opt = torch.optim.Adam(arch, lr=cfg.arch_lr, betas=cfg.arch_betas,
                             weight_decay=cfg.arch_weight_decay)

    def unrolled(x, y, xv, yv, lr):
        g_w = mean_grad(model, x, y, weights, shards)
        saved = [p.detach().clone() for p in weights]
        with torch.no_grad():  # w' = w - lr * (momentum * buf + grad + wd * w)
            for p, g in zip(weights, g_w):
                buf = w_opt.state.get(p, {}).get("momentum_buffer")
                p.sub_(lr * ((cfg.momentum * buf if buf is not None else 0.0) + g
                             + cfg.weight_decay * p))
        grads = mean_grad(model, xv, yv, arch + weights, shards)
        d_alpha, v = grads[:len(arch)], grads[len(arch):]
        with torch.no_grad():
            for p, s in zip(weights, saved):
                p.copy_(s)
        R = 0.01 / torch.cat([t.flatten() for t in v]).norm()
        fd = []
        for sign in (1.0, -2.0):
            with torch.no_grad():
                for p, t in zip(weights, v):
                    p.add_(t, alpha=sign * R)
            fd.append(mean_grad(model, x, y, arch, shards))
        with torch.no_grad():
            for p, t in zip(weights, v):
                p.add_(t, alpha=R)
        return [d - lr * (gp - gn) / (2 * R) for d, gp, gn in zip(d_alpha, *fd)]

    for epoch in range(cfg.epochs):
        lr = sched.get_last_lr()[0]
        model.train()
        for step, ((x, y), (xv, yv)) in enumerate(zip(tl, vl)):
            if step == cfg.steps_per_epoch:
                break
            if epoch >= cfg.warmup_epochs:
                grads = (unrolled(x, y, xv, yv, lr) if cfg.unrolled
                         else mean_grad(model, xv, yv, arch, shards))
                for p, g in zip(arch, grads):
                    p.grad = g
                a_opt.step()
                a_opt.zero_grad(set_to_none=True)
            for p, g in zip(weights, mean_grad(model, x, y, weights, shards)):
                p.grad = g
            nn.utils.clip_grad_norm_(weights, cfg.grad_clip)
            w_opt.step()
        sched.step()
    return w.params(model), model.genotype().to_dict()


@pytest.mark.parametrize("name,cfg", [("pc_darts", w.SEARCH), ("unrolled", w.UNROLLED)],
                         ids=["pc-darts-first-order", "darts-unrolled"])
def test_search_on_2_ranks_equals_one_process_weights_alpha_beta_genotype(run, name, cfg):
    _, ranks = run
    want, genotype = reference_search(cfg)
    assert any(k.startswith("alpha") for k in want)
    assert any(k.startswith("beta") for k in want) == cfg.edge_norm
    for r in ranks:
        assert_same_params(r[name]["params"], want)  # weights, alpha and beta
        assert r[name]["genotype"] == genotype
    # every rank holds the very same alpha (an average, not its own shard's)
    for k in want:
        if k.startswith(("alpha", "beta")):
            assert torch.equal(ranks[0][name]["params"][k], ranks[1][name]["params"][k])


# -- SPOS --------------------------------------------------------------------------------
def reference_spos(shards=w.W):
    cfg = w.SPOS
    torch.manual_seed(0)
    supernet = spos.Supernet(w.SPOS_NET)
    init = w.params(supernet)
    opt = spos.make_optimizer(supernet, cfg)
    loader = DeviceLoader(w.spos_data(), cfg.batch_size, train=True, seed=cfg.seed)
    total = cfg.epochs * len(loader)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1 - s / total)
    rng, paths = random.Random(cfg.seed), []
    for _ in range(cfg.epochs):
        supernet.train()
        for x, y in loader:
            path = spos.sample_path(cfg.supernet, rng, cfg.sampling == "window",
                                    flops_limit=cfg.flops_limit)
            paths.append(path)
            opt.zero_grad(set_to_none=True)
            for xs, ys in zip(x.chunk(shards), y.chunk(shards)):
                loss = F.cross_entropy(supernet(xs, path), ys,
                                       label_smoothing=cfg.label_smoothing) / shards
                loss.backward()
            opt.step()
            sched.step()
    return w.params(supernet), paths, init


def test_spos_ranks_train_the_same_paths_average_grads_and_leave_unsampled_blocks(run):
    _, ranks = run
    want, paths, init = reference_spos()
    assert ranks[0]["spos"]["paths"] == ranks[1]["spos"]["paths"] == paths
    for r in ranks:
        assert_same_params(r["spos"]["params"], want)
        # stopped after an epoch (rank 0 wrote the checkpoint) and resumed on both ranks
        for k, v in r["spos"]["params"].items():
            assert torch.equal(r["spos"]["resumed"][k], v), k
    sampled = {(layer, block) for p in paths for layer, block in enumerate(p)}
    untouched = [k for k in want if k.startswith("layers.")
                 and (int(k.split(".")[1]), int(k.split(".")[2])) not in sampled]
    assert untouched  # these settings leave some blocks off every path
    for k in untouched:  # weight decay and momentum too: not one bit moved
        assert torch.equal(ranks[0]["spos"]["params"][k], init[k])
        assert torch.equal(ranks[1]["spos"]["params"][k], init[k])


# -- PNAS --------------------------------------------------------------------------------
def test_pnas_children_are_spread_over_ranks_and_gathered_like_one_process(run):
    _, ranks = run
    trained = []

    def fake_trainer(cells):
        trained.extend(pnas.cell_key(c) for c in cells)
        return [w.toy_accuracy(c) for c in cells]

    one = pnas.search(w.PNAS, train_fn=fake_trainer, progress=False)
    for r in ranks:  # every rank takes the same decisions from the gathered accuracies
        assert r["pnas"]["evaluated"] == one.evaluated
        assert r["pnas"]["levels"] == one.levels
    mine = [set(r["pnas"]["trained"]) for r in ranks]
    assert all(mine) and not mine[0] & mine[1]  # each child trained once, by one rank
    assert mine[0] | mine[1] == set(trained)
    assert len(ranks[0]["pnas"]["trained"]) + len(ranks[1]["pnas"]["trained"]) == len(trained)


# -- files and resume ----------------------------------------------------------------------
def test_only_rank_0_writes_files(run):
    out, _ = run  # each rank was given its own folder: rank 1's must not exist
    assert (out / "pc-run-rank0" / "checkpoint.pt").is_file()
    assert (out / "pnas-run-rank0" / "checkpoint.json").is_file()
    assert (out / "supernet-rank0.pt").is_file()
    assert not (out / "pc-run-rank1").exists()
    assert not (out / "pnas-run-rank1").exists()
    assert not (out / "supernet-rank1.pt").exists()
    ckpt = torch.load(out / "pc-run-rank0" / "checkpoint.pt", weights_only=False)
    assert ckpt["world_size"] == 2


@pytest.fixture(scope="module")
def resumed(run):
    """The search stopped after its first epoch on 2 ranks, resumed by the CLI under
    torchrun (the end-to-end path a course runs)."""
    out, _ = run
    folder = out / "resume-run"
    assert torch.load(folder / "checkpoint.pt", weights_only=False)["epoch"] == 1
    proc = torchrun("-m", "nas_tutorial.run.cli", "search", "pc-darts", "--resume", str(folder),
                    "--device", "cpu")
    return folder, proc


def test_a_stopped_2_rank_search_resumes_through_torchrun_to_the_uninterrupted_result(
        run, resumed):
    out, ranks = run
    folder, proc = resumed
    done = torch.load(folder / "checkpoint.pt", weights_only=False)
    straight = torch.load(out / "pc-run-rank0" / "checkpoint.pt", weights_only=False)
    assert done["epoch"] == straight["epoch"] == w.SEARCH.epochs
    for k, v in straight["model"].items():
        torch.testing.assert_close(done["model"][k], v, **TOL, msg=k)
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["processes"] == 2
    assert summary["results"]["genotype"] == ranks[0]["pc_darts"]["genotype"]
    # rank 0 alone prints its result line (a line of its own: "graphviz 'dot' not found:"
    # on a machine without graphviz must not count)
    assert [line.startswith("found:") for line in proc.stdout.splitlines()].count(True) == 1


def test_resuming_a_2_process_run_in_one_process_is_refused_in_one_line(run, tmp_path, capsys):
    out, _ = run
    folder = tmp_path / "run"
    shutil.copytree(out / "resume-run", folder)
    (folder / "summary.json").unlink(missing_ok=True)  # as if killed: a finished run says so
    before = sorted(p.name for p in folder.iterdir())
    assert cli_main(["search", "pc-darts", "--resume", str(folder), "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "run on 2 process(es), this is 1" in err
    assert "torchrun" in err
    assert sorted(p.name for p in folder.iterdir()) == before


# -- checks without a launch ---------------------------------------------------------------
def test_a_global_batch_must_split_into_equal_shards(monkeypatch):
    monkeypatch.setattr(distributed, "world_size", lambda: 3)
    with pytest.raises(ValueError, match="batch_size=64 does not split over 3 processes"):
        distributed.check_batch(64)
    distributed.check_batch(96)


def test_shard_takes_this_ranks_contiguous_rows(monkeypatch):
    x, y = torch.arange(8).view(8, 1), torch.arange(8)
    assert distributed.shard(x, y)[1].tolist() == list(range(8))  # one process: all of it
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    monkeypatch.setattr(distributed, "rank", lambda: 1)
    xs, ys = distributed.shard(x, y)
    assert ys.tolist() == [4, 5, 6, 7] and xs.flatten().tolist() == [4, 5, 6, 7]


def test_without_torchrun_nothing_is_distributed():
    assert not distributed.active() and distributed.world_size() == 1
    assert distributed.is_main() and distributed.rank_seed(5) == 5
    assert distributed.spread(lambda items: [i * 2 for i in items], [1, 2, 3]) == [2, 4, 6]
    g = [torch.ones(2)]
    assert distributed.all_reduce_mean(g)[0] is g[0]


def test_verbs_of_one_process_are_refused_under_torchrun(monkeypatch, capsys):
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert cli_main(["table", "pnas", "--limit", "1"]) == 2
    err = capsys.readouterr().err
    assert "'table' runs in one process; start it without torchrun" in err
