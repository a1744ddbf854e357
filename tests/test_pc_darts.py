"""PC-DARTS / DARTS search: the plain supernet against the official code's sums, the fast
one (the search's) against the plain one."""
import copy
from dataclasses import asdict
import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import nas_tutorial as nt
from nas_tutorial import pc_darts as pc
from nas_tutorial.fast import pc_darts as fpc
from nas_tutorial.fast.fused import FusedSearchCell
from nas_tutorial.run import searches
from nas_tutorial.run.cli import main as cli_main
from nas_tutorial.ops import DARTS_OPS


@pytest.fixture
def one_thread():
    # Thousands of tiny ops: on a busy 2-core machine a second OpenMP thread made these
    # tests 10-100x slower (measured), as it does the quick search (PRESETS["quick"]).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _net(k, edge_norm, fast=False, seed=0, fused=False):
    """A float64 supernet of 3 cells (normal, reduction, reduction after a reduction), its
    alpha/beta drawn away from uniform so that the weights matter."""
    torch.manual_seed(seed)
    net = pc.SearchNetwork(8, 5, 3, k=k, edge_norm=edge_norm, steps=3, multiplier=3,
                           in_channels=2, fast=fast, fused=fused).double()
    with torch.no_grad():
        for p in net.arch_parameters():
            p.normal_(0, 1)
    return net


def _official_forward(net, x):
    """The official ``model_search.py`` forward, written out here over ``net``'s own modules:
    PC-DARTS's ``MixedOp.forward`` (partial channels, bypass, shuffle per edge; DARTS's at
    k=1), ``Cell.forward`` (sum_j weights2[j] * op_j(h_j)) and ``Network.forward`` (the
    per-node softmax of beta, built as the official loop builds it)."""
    def channel_shuffle(x, groups):  # official
        b, c, h, w = x.size()
        x = x.view(b, groups, c // groups, h, w)
        return torch.transpose(x, 1, 2).contiguous().view(b, -1, h, w)

    def mixed_op(cell, e, x, weights):
        ops = cell._ops[e]._ops
        if net.k == 1:  # DARTS MixedOp
            return sum(w * op(x) for w, op in zip(weights, ops))
        dim_2 = x.shape[1]
        xtemp, xtemp2 = x[:, :dim_2 // net.k], x[:, dim_2 // net.k:]
        temp1 = sum(w * op(xtemp) for w, op in zip(weights, ops))
        if temp1.shape[2] == x.shape[2]:
            ans = torch.cat([temp1, xtemp2], dim=1)
        else:
            ans = torch.cat([temp1, cell.mp(xtemp2)], dim=1)
        return channel_shuffle(ans, net.k)

    s0 = s1 = net.stem(x)
    for cell in net.cells:
        kind = "reduce" if cell.reduction else "normal"
        weights = F.softmax(getattr(net, "alpha_" + kind), dim=-1)
        if net.edge_norm:
            betas = getattr(net, "beta_" + kind)
            n, start = 3, 2
            weights2 = F.softmax(betas[0:2], dim=-1)
            for i in range(net._steps - 1):
                end = start + n
                weights2 = torch.cat([weights2, F.softmax(betas[start:end], dim=-1)], dim=0)
                start, n = end, n + 1
        states, offset = [cell.preprocess0(s0), cell.preprocess1(s1)], 0
        for i in range(net._steps):
            if net.edge_norm:
                s = sum(weights2[offset + j] * mixed_op(cell, offset + j, h, weights[offset + j])
                        for j, h in enumerate(states))
            else:
                s = sum(mixed_op(cell, offset + j, h, weights[offset + j])
                        for j, h in enumerate(states))
            offset += len(states)
            states.append(s)
        s0, s1 = s1, torch.cat(states[-net._multiplier:], dim=1)
    out = net.global_pooling(s1)
    return net.classifier(out.view(out.size(0), -1))


@pytest.mark.parametrize("k,edge_norm", [(1, False), (2, True), (4, True), (4, False)],
                         ids=["darts", "k2", "k4", "k4-no-beta"])
def test_plain_supernet_is_the_official_code(k, edge_norm, one_thread):
    """The library's reference supernet computes the official code's sums in the official
    order: equal to the last bit's noise. ``k=1, edge_norm=False`` is DARTS: every channel
    through every op, no shuffle, no beta."""
    net = _net(k, edge_norm)
    x = torch.randn(4, 2, 10, 10, dtype=torch.float64)  # odd sizes after the reductions
    out, ref = net(x), _official_forward(net, x)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)
    g = torch.autograd.grad(out.square().sum(), net.arch_parameters())
    g_ref = torch.autograd.grad(ref.square().sum(), net.arch_parameters())
    for a, b in zip(g, g_ref):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    if k == 1 and not edge_norm:
        assert [p.shape for p in net.arch_parameters()] == [(9, 8)] * 2  # alpha only
        assert all(op._ops[-1][1].in_channels == cell.C for cell in net.cells
                   for op in cell._ops)  # dil_conv_5x5 reads all C channels of its state


@pytest.mark.parametrize("edge_norm", [False, True], ids=["no-beta", "beta"])
@pytest.mark.parametrize("k", [1, 2, 4])
def test_fast_supernet_equals_the_plain_one(k, edge_norm, one_thread):
    """The search's fast cells (nas_tutorial.fast.pc_darts) are the plain supernet
    rewritten: built from one seed, they hold the same parameters and buffers under the same
    names (a checkpoint of one loads into the other), and in float64 give the same logits,
    the same gradients for alpha, beta and every weight, and the same BN statistics; in a
    normal cell, a reduction cell and a reduction cell after a reduction, at odd sizes."""
    plain, fast = _net(k, edge_norm), _net(k, edge_norm, fast=True)
    assert type(plain.cells[0]) is pc.SearchCell and type(fast.cells[0]) is fpc.FastSearchCell
    assert [c.reduction for c in plain.cells] == [False, True, True]
    state, fast_state = plain.state_dict(), fast.state_dict()
    assert list(state) == list(fast_state)
    for name in state:
        assert torch.equal(state[name], fast_state[name]), name  # one seed, one network
    fast.load_state_dict(copy.deepcopy(state))
    x = torch.randn(4, 2, 10, 10, dtype=torch.float64)
    out, fast_out = plain(x), fast(x)
    torch.testing.assert_close(fast_out, out, rtol=1e-9, atol=1e-12)
    names = [n for n, _ in plain.named_parameters()]
    assert names == [n for n, _ in fast.named_parameters()]
    assert {"alpha_normal", "alpha_reduce"} <= set(names)
    assert ("beta_normal" in names) == edge_norm
    grads = torch.autograd.grad(out.square().sum(), list(plain.parameters()))
    fast_grads = torch.autograd.grad(fast_out.square().sum(), list(fast.parameters()))
    for name, g, fg in zip(names, grads, fast_grads):
        torch.testing.assert_close(fg, g, rtol=1e-8, atol=1e-12, msg=name)
    for (name, b), fb in zip(plain.named_buffers(), fast.buffers()):
        torch.testing.assert_close(fb, b, rtol=1e-9, atol=1e-12, msg=name)


def _plain_named(net, tensors) -> dict:
    """Per-parameter tensors of a fused supernet (its gradients) under the plain names: the
    state dict of a copy whose parameters hold them."""
    twin = copy.deepcopy(net)
    with torch.no_grad():
        for p, t in zip(twin.parameters(), tensors):
            p.copy_(t)
    stats = ("running_mean", "running_var", "num_batches_tracked")
    return {n: v for n, v in twin.state_dict().items() if not n.endswith(stats)}


@pytest.mark.parametrize("edge_norm", [False, True], ids=["no-beta", "beta"])
@pytest.mark.parametrize("k", [1, 2, 4, 8])
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_fused_supernet_equals_the_plain_one(k, edge_norm, train, one_thread):
    """The search's fused cells (nas_tutorial.fast.fused: every edge leaving a state in one
    pass) are the plain supernet: built from one seed, their state dict is the plain one,
    key for key, in order, value for value (a checkpoint moves both ways); in float64 they
    give the same logits, the same gradients for alpha, beta and every weight (mapped to
    the plain names), and the same BN statistics, in training and in eval mode, at odd
    sizes, in normal and reduction cells."""
    plain, fused = _net(k, edge_norm), _net(k, edge_norm, fused=True)
    assert type(fused.cells[0]) is FusedSearchCell
    assert len(list(fused.parameters())) < len(list(plain.parameters())) / 2  # stacked
    state, fused_state = plain.state_dict(), fused.state_dict()
    assert list(state) == list(fused_state)
    for name in state:
        assert torch.equal(state[name], fused_state[name]), name  # one seed, one network
    with torch.no_grad():  # different weights, loaded from the plain net, still agree
        for p in plain.parameters():
            p.add_(0.1 * torch.randn_like(p))
    x = torch.randn(4, 2, 10, 10, dtype=torch.float64)
    if not train:  # eval mode reads the running statistics: make them differ from (0, 1)
        plain(x)
        plain.eval(), fused.eval()
    fused.load_state_dict(copy.deepcopy(plain.state_dict()))
    out, fused_out = plain(x), fused(x)
    torch.testing.assert_close(fused_out, out, rtol=1e-9, atol=1e-12)
    names = [n for n, _ in plain.named_parameters()]
    grads = torch.autograd.grad(out.square().sum(), list(plain.parameters()))
    raw = torch.autograd.grad(fused_out.square().sum(), list(fused.parameters()))
    for (name, p), g in zip(fused.named_parameters(), raw):  # a 3x3 kernel's 5x5 ring
        if name.endswith(("dw1", "dil_dw", "dw2")):
            mask = fused.get_submodule(name.rsplit(".", 1)[0]).mask
            assert not g[mask == 0].any() and not p[mask == 0].any(), name
    fused_grads = _plain_named(fused, raw)
    assert sorted(fused_grads) == sorted(names)
    for name, g in zip(names, grads):
        torch.testing.assert_close(fused_grads[name], g, rtol=1e-8, atol=1e-12, msg=name)
    fused_state = fused.state_dict()
    for name, b in plain.named_buffers():
        torch.testing.assert_close(fused_state[name], b, rtol=1e-9, atol=1e-12, msg=name)


@pytest.mark.parametrize("split", [False, True], ids=["one-output", "split"])
def test_grouped_pointwise_is_the_grouped_conv(split, one_thread):
    """The fused cells' 1x1 convs of many edges (fast.fused.pointwise): on a CPU one batched
    product, on CUDA the grouped conv; the two agree in the output and both gradients, with
    several inputs gathered and the output split."""
    from nas_tutorial.fast.fused import pointwise

    torch.manual_seed(0)
    xs = [torch.randn(3, 2 * 4, 5, 6, dtype=torch.float64, requires_grad=True) for _ in range(2)]
    weight = torch.randn(4 * 3, 4, 1, 1, dtype=torch.float64, requires_grad=True)
    outs = (1, 3) if split else None
    got = pointwise(xs, weight, outs)
    want = F.conv2d(torch.cat(xs, 1), weight, groups=4)
    want = want.split([3, 9], 1) if split else (want,)
    got = got if split else (got,)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-12)
    probes = [torch.randn_like(w) for w in want]
    grads = torch.autograd.grad(sum((g * p).sum() for g, p in zip(got, probes)), [*xs, weight])
    wants = torch.autograd.grad(sum((w * p).sum() for w, p in zip(want, probes)), [*xs, weight])
    for g, w in zip(grads, wants):
        torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-12)


def test_fused_optimizers_make_the_same_update():
    """The search's optimizers update every parameter in one fused operator where torch can;
    the update is the unfused one, to rounding."""
    cfg = _tiny()
    for make in (lambda m: pc.weight_optimizer(m, cfg), lambda m: pc.Architect(m, cfg).optimizer):
        nets = [pc.SearchNetwork(4, 3, 3, k=2, steps=2, multiplier=2, in_channels=1)
                for _ in range(2)]
        nets[1].load_state_dict(nets[0].state_dict())
        opts = [make(nets[0]), make(nets[1])]
        for group in opts[1].param_groups:  # the second one unfused
            group["fused"] = None
        params = [o.param_groups[0]["params"] for o in opts]
        for _ in range(3):
            for a, b in zip(*params):
                a.grad = torch.randn_like(a)
                b.grad = a.grad.clone()
            for o in opts:
                o.step()
        for a, b in zip(*params):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_a_checkpoint_from_before_the_fused_cells_resumes_unfused():
    """A checkpoint's config without ``fused`` was made with the unfused cells: it resumes in
    them (its optimizer state belongs to their parameters); a new search fuses."""
    old = asdict(_tiny())
    old.pop("fused")
    assert pc.config_of({"config": old}, "here").fused is False
    assert _tiny().fused is True


def test_fused_supernet_falls_back_to_the_fast_cell_for_other_ops(one_thread):
    """Another op set (a course's exercise) runs in the unfused fast cell, still equal."""
    ops = ("none", "avg_pool_3x3", "skip_connect", "dil_conv_3x3")
    torch.manual_seed(0)
    plain = pc.SearchNetwork(8, 5, 3, k=2, steps=2, multiplier=2, in_channels=2,
                             primitives=ops).double()
    torch.manual_seed(0)
    fused = pc.SearchNetwork(8, 5, 3, k=2, steps=2, multiplier=2, in_channels=2,
                             primitives=ops, fused=True).double()
    assert type(fused.cells[0]) is fpc.FastSearchCell
    x = torch.randn(2, 2, 8, 8, dtype=torch.float64)
    torch.testing.assert_close(fused(x), plain(x), rtol=1e-9, atol=1e-12)
    with pytest.raises(ValueError, match="DARTS's eight ops"):
        FusedSearchCell(2, 2, 8, 8, 8, False, False, 2, primitives=ops)


def test_partial_channels_and_shuffle():
    x = torch.arange(8.0).view(1, 8, 1, 1)
    assert pc.channel_shuffle(x, 4).flatten().tolist() == [0, 2, 4, 6, 1, 3, 5, 7]
    assert torch.equal(pc.channel_shuffle(x, 1), x)
    net = pc.SearchNetwork(16, 10, 3, k=4, steps=2, multiplier=2)
    seen = []
    for m in net.modules():
        if isinstance(m, pc.MixedOp):
            m.register_forward_hook(lambda mod, inp, out: seen.append((inp[0].shape[1],
                                                                       out.shape[1])))
    net(torch.randn(2, 3, 8, 8))
    # 1/4 of 16, 32, 64 channels go through the ops: 4, 8, 16
    assert sorted(set(seen)) == [(4, 4), (8, 8), (16, 16)]
    # The ops never read the bypassed channels: an edge's ops take the first C/K channels
    # of its state, the others leave the edge as they came (max-pooled on a strided edge),
    # shuffled in. The shuffle into C/K groups undoes the one into K.
    w = torch.full((len(DARTS_OPS),), 1 / len(DARTS_OPS))
    cell, s = net.cells[0], torch.randn(2, 16, 8, 8)
    assert torch.equal(pc.channel_shuffle(cell.edge(0, s, w), 16 // 4)[:, 4:], s[:, 4:])
    red, s = net.cells[1], torch.randn(2, 32, 8, 8)
    rest = pc.channel_shuffle(red.edge(1, s, w), 32 // 4)[:, 8:]
    assert rest.shape == (2, 24, 4, 4) and torch.equal(rest, red.mp(s[:, 8:]))


@pytest.mark.parametrize("reduction", [False, True])
def test_pools_run_once_per_state_and_change_nothing(reduction, monkeypatch):
    """A pool has no weights, so every edge leaving one state pools alike: the cell pools
    each state once (5 states, not 14 edges) and each edge applies its own BN. Outputs,
    gradients and every BN's running statistics equal the pool-per-edge computation."""
    torch.manual_seed(0)
    cell = fpc.FastSearchCell(4, 4, 8, 8, 8, reduction, False, k=2).double()
    alpha = torch.randn(14, 8, dtype=torch.float64).softmax(-1).requires_grad_()
    beta = pc.node_softmax(torch.randn(14, dtype=torch.float64), 4)
    s0, s1 = (torch.randn(3, 8, 6, 6, dtype=torch.float64, requires_grad=True) for _ in range(2))
    pools = [m for m in cell.modules() if isinstance(m, (nn.MaxPool2d, nn.AvgPool2d))
             and m is not cell.mp]
    calls = []
    for m in pools:
        m.register_forward_hook(lambda *a: calls.append(1))

    def run(shared):
        if not shared:
            monkeypatch.setattr(fpc.FastMixedOp, "pooled", lambda self, x: {})
        c = copy.deepcopy(cell)
        out = c(s0, s1, alpha, beta)
        grads = torch.autograd.grad(out.square().sum(), [alpha, s0, s1])
        stats = [b.clone() for b in c.buffers()]
        monkeypatch.undo()
        return out, grads, stats

    calls.clear()
    out, grads, stats = run(shared=True)
    assert len(calls) == 2 * 5  # max and avg pool, once per state
    calls.clear()
    ref, ref_grads, ref_stats = run(shared=False)
    assert len(calls) == 2 * 14  # once per edge
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)
    for a, b in zip(grads + tuple(stats), ref_grads + tuple(ref_stats)):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_edge_normalization_groups():
    beta = torch.randn(14)
    w = pc.node_softmax(beta, 4)
    for a, b in [(0, 2), (2, 5), (5, 9), (9, 14)]:
        torch.testing.assert_close(w[a:b], F.softmax(beta[a:b], -1))
        assert abs(float(w[a:b].sum()) - 1) < 1e-6
    beta2 = beta.clone()
    beta2[3] += 5.0  # an edge of node 1 moves only node 1's group
    w2 = pc.node_softmax(beta2, 4)
    assert torch.equal(w2[:2], w[:2]) and torch.equal(w2[5:], w[5:])
    assert w2[3] > w[3]
    net = pc.SearchNetwork(8, 10, 3, k=2, edge_norm=False)
    assert len(net.arch_parameters()) == 2
    assert len(pc.SearchNetwork(8, 10, 3, k=2).arch_parameters()) == 4


def test_derivation_hand_set():
    n_ops = len(DARTS_OPS)
    op = {name: i for i, name in enumerate(DARTS_OPS)}

    def row(name, value, none=0.0):
        r = [0.01] * n_ops
        r[op["none"]] = none
        r[op[name]] = value
        return r

    # 2 steps: edges (node0: k-2, k-1), (node1: k-2, k-1, node0)
    alpha = [row("sep_conv_3x3", 0.5), row("max_pool_3x3", 0.4),
             row("skip_connect", 0.3, none=0.9),  # `none` is strongest here: ignored
             row("dil_conv_5x5", 0.6), row("avg_pool_3x3", 0.5)]
    g = pc.derive_genotype(alpha, alpha, steps=2, multiplier=2)
    assert g.normal == (("sep_conv_3x3", 0), ("max_pool_3x3", 1),
                        ("dil_conv_5x5", 1), ("avg_pool_3x3", 2))
    assert g.normal_concat == (2, 3)
    # beta reranks edges (PC-DARTS): node1 now keeps edges 0 and 2, ops unchanged
    beta = [0.5, 0.5, 0.6, 0.1, 0.3]
    g = pc.derive_genotype(alpha, alpha, beta, beta, steps=2, multiplier=2)
    assert g.normal == (("sep_conv_3x3", 0), ("max_pool_3x3", 1),
                        ("skip_connect", 0), ("avg_pool_3x3", 2))
    # the network's own genotype() goes through the same function
    net = pc.SearchNetwork(8, 10, 3, k=2, steps=2, multiplier=2)
    with torch.no_grad():
        net.alpha_normal.copy_(torch.tensor(alpha).log())
        net.beta_normal.copy_(torch.tensor(beta).log())
    assert set(net.genotype().normal[2:]) == {("skip_connect", 0), ("avg_pool_3x3", 2)}


def test_second_order_gradient_matches_finite_differences():
    torch.manual_seed(0)
    cfg = pc.SearchConfig(dataset="synthetic", C=4, layers=3, steps=2, multiplier=2, k=2,
                          unrolled=True, weight_decay=3e-4, amp=False)
    # the search's supernet (fast cells): the step as the search takes it
    net = pc.SearchNetwork(4, 3, 3, k=2, steps=2, multiplier=2, in_channels=1,
                           fast=True).double()
    with torch.no_grad():
        for p in net.arch_parameters():
            p.normal_(0, 0.5)
    xt, yt = torch.randn(6, 1, 6, 6, dtype=torch.float64), torch.randint(0, 3, (6,))
    xv, yv = torch.randn(6, 1, 6, 6, dtype=torch.float64), torch.randint(0, 3, (6,))
    lr = 0.5
    arch = pc.Architect(net, cfg)
    # DARTS's r=0.01 is coarse for a net this small (kinks of ReLU/max-pool); a smaller r
    # checks the same code path tightly.
    arch.r = 1e-4
    grads, _ = arch.unrolled_grads(xt, yt, xv, yv, lr)
    weights = net.weight_parameters()
    w0 = [w.detach().clone() for w in weights]

    def f():  # L_val(w - lr * (grad_w L_train + wd w), alpha), computed directly
        loss = F.cross_entropy(net(xt), yt)
        g = torch.autograd.grad(loss, weights)
        with torch.no_grad():
            for w, gw, s in zip(weights, g, w0):
                w.copy_(s - lr * (gw + cfg.weight_decay * s))
            val = float(F.cross_entropy(net(xv), yv))
            for w, s in zip(weights, w0):
                w.copy_(s)
        return val

    eps = 1e-5
    for p, g in zip(net.arch_parameters(), grads):
        flat, gflat = p.data.view(-1), g.view(-1)
        for i in range(0, flat.numel(), 7):  # a spread of entries keeps the test fast
            old = float(flat[i])
            flat[i] = old + eps
            up = f()
            flat[i] = old - eps
            down = f()
            flat[i] = old
            fd = (up - down) / (2 * eps)
            assert abs(fd - float(gflat[i])) < 1e-5 + 1e-2 * abs(fd), (p.shape, i, fd, gflat[i])
    # and it is not the first-order gradient
    first = torch.autograd.grad(F.cross_entropy(net(xv), yv), net.arch_parameters())
    assert max(float((a - b).abs().max()) for a, b in zip(first, grads)) > 1e-4


def _tiny(**kw):
    base = dict(dataset="digits", image_size=8, C=4, layers=3, steps=2, multiplier=2, k=2,
                epochs=3, batch_size=32, steps_per_epoch=2, warmup_epochs=1, lr=0.05,
                arch_lr=3e-3, record_every=1)
    base.update(kw)
    return pc.SearchConfig(**base)


def test_resume_reaches_same_result(tmp_path):
    cfg = _tiny()
    full = pc.search(cfg, out=tmp_path / "a", device="cpu", progress=False)

    def stop(history):
        if history.epoch[-1] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        pc.search(cfg, out=tmp_path / "b", device="cpu", progress=False, callback=stop)
    assert pc.load_checkpoint(tmp_path / "b")["epoch"] == 2
    resumed = pc.search(None, resume=tmp_path / "b", device="cpu", progress=False)
    assert resumed.genotype == full.genotype
    a, b = full.history.to_dict(), resumed.history.to_dict()
    a.pop("seconds"), b.pop("seconds")
    assert a == b
    assert len(b["epoch"]) == 3 and len(b["steps"]) == 6
    saved = json.loads((tmp_path / "b" / "history.json").read_text())
    assert saved["genotype"][-1] == full.genotype.to_dict()
    with pytest.raises(ValueError, match="another config"):
        pc.search(_tiny(seed=1), resume=tmp_path / "b", device="cpu", progress=False)


def test_nan_guard_keeps_last_checkpoint(tmp_path, monkeypatch):
    forward = pc.SearchNetwork.forward
    calls = {"n": 0}

    def poisoned(self, x):
        calls["n"] += 1
        out = forward(self, x)
        return out * float("nan") if calls["n"] > 6 else out  # epoch 1 is 2 steps + eval

    monkeypatch.setattr(pc.SearchNetwork, "forward", poisoned)
    with pytest.raises(pc.SearchDiverged, match="NaN/Inf in the loss"):
        pc.search(_tiny(), out=tmp_path, device="cpu", progress=False)
    assert isinstance(pc.SearchDiverged("x"), RuntimeError)
    ckpt = pc.load_checkpoint(tmp_path)
    assert ckpt["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values()
               if v.dtype.is_floating_point)


@pytest.mark.parametrize("k,edge_norm,expected", [(4, True, 299_578), (1, False, 1_930_618)])
def test_parameter_counts_at_published_configuration(k, edge_norm, expected):
    # The official logs print 0.299578 MB (PC-DARTS) and 1.930618 MB (DARTS): weights only.
    net = pc.SearchNetwork(16, 10, 8, k=k, edge_norm=edge_norm)
    assert sum(p.numel() for p in net.weight_parameters()) == expected
    assert sum(p.numel() for p in net.arch_parameters()) == 14 * 8 * 2 + (28 if edge_norm else 0)


def test_presets_carry_the_papers_settings():
    p = pc.get_config("pc-darts", "full")
    assert (p.batch_size, p.lr, p.warmup_epochs, p.arch_lr, p.k, p.edge_norm) == \
        (256, 0.1, 15, 6e-4, 4, True)
    d = pc.get_config("darts", "full")
    assert (d.batch_size, d.lr, d.lr_min, d.arch_lr, d.warmup_epochs, d.k, d.edge_norm) == \
        (64, 0.025, 0.001, 3e-4, 0, 1, False)
    assert pc.get_config("darts", "quick").k == 1
    with pytest.raises(ValueError, match="must divide"):
        pc.get_config("pc-darts", "quick", k=3)
    with pytest.raises(ValueError, match="unknown SearchConfig"):
        pc.get_config("pc-darts", "quick", bogus=1)


def test_cli_errors(tmp_path, capsys):
    assert cli_main(["search", "pc-darts", "--preset", "quick", "--k", "3"]) == 2
    assert "must divide" in capsys.readouterr().err
    assert cli_main(["search", "darts", "--preset", "quick", "--resume",
                     str(tmp_path / "nothing")]) == 2
    assert "nothing to resume" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        cli_main(["search", "pc-darts", "--dataset", "imagenet"])
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        cli_main(["search", "pc-darts", "--k", "0"])
    assert e.value.code == 2


def test_unrolled_search_runs_with_momentum():
    r = pc.search(_tiny(unrolled=True, epochs=2, record_every=0), device="cpu", progress=False)
    assert len(r.history.genotype) == 2 and r.history.beta_normal[-1] is not None


def test_cli_search_writes_the_run(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli_main(["search", "pc-darts", "--preset", "quick", "--epochs", "1",
                     "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert any(line.startswith("found:") for line in text.splitlines()) and str(out) in text
    for name in ("genotype.json", "history.json", "checkpoint.pt", "alpha_normal.html",
                 "alpha_heatmap.html", "skip_monitor.html"):
        assert (out / name).is_file(), name
    g = pc.Genotype.load(out / "genotype.json")
    assert f"found:    {g}" in text
    # issue 16: the run wrote only its run files (what --overwrite deletes), and the finished
    # run is safe: a new run into it, or a resume that contradicts it, changes nothing
    from nas_tutorial.run.folders import RUN_FILES

    written = {p.name for p in out.iterdir()}
    assert written <= set(RUN_FILES["pc-darts"]), written - set(RUN_FILES["pc-darts"])
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    for argv, words in [
        (["--preset", "quick", "--epochs", "1", "--out", str(out)],
         "already holds a pc-darts or darts run (checkpoint.pt, genotype.json, "),
        (["--resume", str(out), "--epochs", "2"], "--epochs 2 contradicts"),
        (["--resume", str(out), "--out", str(out)], "--out cannot go with --resume"),
    ]:
        assert cli_main(["search", "pc-darts", *argv]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and words in err[0]
        assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert cli_main(["search", "darts", "--resume", str(out)]) == 2
    assert "holds a pc-darts run" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_second_order_step_stays_fp32_under_bf16_autocast(monkeypatch):
    """bf16 autocast (on by default on CUDA) must not reach the unrolled step: its
    finite-difference Hessian-vector product differences two gradients taken 0.01/||v||
    apart. Emulated on the CPU by turning the project's CUDA-only bf16 autocast on here:
    the second-order gradient must match float64 (measured: cosine 0.89 when it ran in bf16,
    0.998 with only its forward passes in fp32, 1.0000 all in fp32), also inside a caller's
    bf16 autocast, while the first-order loss really is bf16 (cosine below 0.9999)."""
    import contextlib
    import copy

    monkeypatch.setattr(pc, "autocast", lambda device, enabled=True: (
        torch.autocast("cpu", dtype=torch.bfloat16) if enabled else contextlib.nullcontext()))
    torch.manual_seed(0)
    cfg = pc.SearchConfig(dataset="synthetic", C=8, layers=5, steps=4, multiplier=4, k=4,
                          unrolled=True, weight_decay=3e-4, amp=True)
    net = pc.SearchNetwork(8, 10, 5, k=4, steps=4, multiplier=4, in_channels=3, fast=True)
    with torch.no_grad():
        for p in net.arch_parameters():
            p.normal_(0, 1e-3)
    net64 = copy.deepcopy(net).double()
    xt, yt = torch.randn(16, 3, 16, 16), torch.randint(0, 10, (16,))
    xv, yv = torch.randn(16, 3, 16, 16), torch.randint(0, 10, (16,))

    def cosine(a, b):
        a, b = (torch.cat([t.flatten().double() for t in g]) for g in (a, b))
        return float(a @ b / a.norm() / b.norm())

    lr = 0.1  # the PC-DARTS weight lr: the Hessian term is scaled by it
    g64, _ = pc.Architect(net64, cfg).unrolled_grads(xt.double(), yt, xv.double(), yv, lr)
    g, _ = pc.Architect(net, cfg).unrolled_grads(xt, yt, xv, yv, lr)
    assert cosine(g, g64) >= 0.9999
    with torch.autocast("cpu", dtype=torch.bfloat16):  # a caller's autocast is shut out too
        g, _ = pc.Architect(net, cfg).unrolled_grads(xt, yt, xv, yv, lr)
    assert cosine(g, g64) >= 0.9999
    cpu = torch.device("cpu")
    first = torch.autograd.grad(pc._loss(net, xv, yv, cpu, True), net.arch_parameters())
    first64 = torch.autograd.grad(pc._loss(net64, xv.double(), yv, cpu, False),
                                  net64.arch_parameters())
    assert cosine(first, first64) < 0.9999  # the emulation is on: bf16 elsewhere


def test_the_unrolled_step_turns_tf32_off_inside_and_restores_it(monkeypatch):
    """cuDNN convolutions and CUDA matmuls run in TF32 by default on Ampere and later
    (measured on an H200: second-order gradient against float64, cosine 0.9586 with TF32,
    0.9990 without). The CPU cannot measure that, so the flags are checked: off (and
    autocast off) in every loss of the unrolled step, back as they were afterwards, also
    when the step fails."""
    seen = []
    inner = pc._loss_fp32

    def spy(*args):
        seen.append((torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32,
                     torch.is_autocast_enabled("cpu")))
        return inner(*args)

    monkeypatch.setattr(pc, "_loss_fp32", spy)
    flags = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True
    try:
        _tf32_off_inside(monkeypatch, seen)
    finally:  # torch's flag objects cannot be monkeypatched: restore by hand
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = flags


def _tf32_off_inside(monkeypatch, seen):
    torch.manual_seed(0)
    net = pc.SearchNetwork(4, 3, 3, k=2, steps=2, multiplier=2, in_channels=1)
    arch = pc.Architect(net, _tiny(unrolled=True))
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 3, (8,))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        arch.step(x, y, x, y, lr=0.05)
    assert len(seen) == 4 and set(seen) == {(False, False, False)}  # w', v, w+, w-
    assert torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32

    def broken(*args):
        raise RuntimeError("boom")

    monkeypatch.setattr(pc, "_loss_fp32", broken)
    with pytest.raises(RuntimeError, match="boom"):
        arch.step(x, y, x, y, lr=0.05)
    assert torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32


def _repeats_exactly(k, channels_last, monkeypatch, ops=False) -> bool:
    """Do two tiny searches with one seed, in one layout, give the same losses?"""
    monkeypatch.setitem(fpc.CPU_OPS_CHANNELS_LAST if ops else fpc.CPU_CHANNELS_LAST, k,
                        channels_last)
    if ops:
        monkeypatch.setitem(fpc.CPU_CHANNELS_LAST, k, False)
    cfg = _tiny(k=k, edge_norm=k > 1, epochs=2, record_every=0, cpu_threads=2, C=16,
                fused=not ops)  # NHWC ops are the unfused cell's
    runs = [pc.search(cfg, device="cpu", progress=False).history for _ in range(2)]
    if ops:
        assert fpc.ops_channels_last(cfg, "cpu") == channels_last
    else:
        assert fpc.uses_channels_last(cfg, "cpu") == channels_last
    return runs[0].train_loss == runs[1].train_loss and runs[0].alpha_normal == runs[1].alpha_normal


def test_architect_takes_a_compiled_forward():
    """`compile=True` hands the Architect torch.compile(model); it used to raise at once."""
    net = pc.SearchNetwork(4, 3, 3, k=2, steps=2, multiplier=2, in_channels=1)
    compiled = torch.compile(net)
    arch = pc.Architect(net, _tiny(), forward=compiled)
    assert arch.forward is compiled


def test_nchw_repeats_a_seeded_search_exactly(monkeypatch):
    for k in (2, 4):
        assert _repeats_exactly(k, False, monkeypatch), k


def test_nhwc_ops_repeat_a_seeded_search_exactly(monkeypatch):
    """NHWC mixed ops in an NCHW network, down to 2 channels per op at K=8 (where the
    factorized reduce's old cat crashed the process), repeat a seeded search exactly."""
    for k in (2, 8):
        assert _repeats_exactly(k, True, monkeypatch, ops=True), k


def test_cpu_layout_table_follows_the_newest_benchmark_record(monkeypatch):
    """The search's CPU memory layout per K is what `make bench` measured faster, not a
    habit: the tables in the library agree with the newest CPU record that has layout rows
    (a difference under 5% may go either way; a NHWC step that failed means NCHW). At K=1
    the row compares whole networks (CPU_CHANNELS_LAST); at K>1 NCHW networks whose mixed
    ops run in NCHW or NHWC (CPU_OPS_CHANNELS_LAST)."""
    from pathlib import Path

    root = Path(nt.__file__).resolve().parent.parent / "data" / "runs"
    records = [r for r in nt.runs.load_runs("benchmarks", root=root)
               if r["device"].startswith("CPU")
               and any("nhwc_scope" in row.get("raw", {}).get("layout", {})
                       for row in r["payload"]["rows"])]
    assert records, "no CPU benchmark record with layout rows under data/runs"
    measured = {row["raw"]["k"]: row["raw"]["layout"] for row in records[0]["payload"]["rows"]
                if "layout" in row.get("raw", {})}
    assert set(measured) >= {1, 2, 4, 8}
    for k, lay in measured.items():
        ops = lay["nhwc_scope"] == "ops"
        assert ops == (k > 1), k
        table = (fpc.CPU_OPS_CHANNELS_LAST if ops else fpc.CPU_CHANNELS_LAST).get(k, False)
        if lay["nhwc_ratio"] is None:
            assert table is False, k
        elif abs(lay["nhwc_ratio"] - 1) > 0.05:
            assert table == (lay["nhwc_ratio"] < 1), (k, lay)
        # the layout rows time the unfused cells (the fused ones copy no state into NHWC ops)
        cfg = pc.get_config("pc-darts", "quick", k=k, edge_norm=k > 1, fused=False)
        assert fpc.uses_channels_last(cfg, "cpu") == (not ops and table)
        assert fpc.ops_channels_last(cfg, "cpu") == (ops and table)
        if table:  # a layout the search uses must repeat a seeded search exactly
            assert _repeats_exactly(k, True, monkeypatch, ops=ops), k
    assert fpc.uses_channels_last(pc.get_config("darts", "quick", channels_last=False),
                                  "cpu") is False


def test_cpu_fused_cells_follow_the_newest_benchmark_record():
    """Fused cells or not, per K on a CPU, is what `make bench` measured faster (the same
    step both ways, in alternation; a difference under 5% may go either way); on CUDA the
    search always fuses, and ``fused=False`` turns it off everywhere."""
    from pathlib import Path

    root = Path(nt.__file__).resolve().parent.parent / "data" / "runs"
    records = [r for r in nt.runs.load_runs("benchmarks", root=root)
               if r["device"].startswith("CPU")
               and any("cells" in row.get("raw", {}) for row in r["payload"]["rows"])]
    assert records, "no CPU benchmark record with fused/unfused rows under data/runs"
    measured = {row["raw"]["k"]: row["raw"]["cells"] for row in records[0]["payload"]["rows"]
                if "cells" in row.get("raw", {})}
    assert set(measured) >= {1, 2, 4, 8}
    for k, cells in measured.items():
        if abs(cells["fused_ratio"] - 1) > 0.05:
            assert fpc.CPU_FUSED[k] == (cells["fused_ratio"] < 1), (k, cells)
        cfg = pc.get_config("pc-darts", "quick", k=k, edge_norm=k > 1)
        assert fpc.uses_fused_cells(cfg, "cpu") == fpc.CPU_FUSED[k]
        assert fpc.uses_fused_cells(cfg, "cuda")
        assert not fpc.uses_fused_cells(pc.get_config("pc-darts", "quick", k=k, fused=False),
                                        "cuda")


def test_param_free_count_names_pools_and_skips():
    g = nt.GENOTYPES["DARTS_V2"]
    assert pc.param_free_count(g, "normal") == 2   # two skip_connects
    assert pc.param_free_count(g, "reduce") == 8   # max pools and skips only
    assert pc.param_free_count(nt.GENOTYPES["PC_DARTS"]) == 2


def test_cli_retrain_places_the_found_cell_and_writes_the_summary(tmp_path, capsys, monkeypatch):
    """--retrain trains the found cell with the table's protocol (here a fake, cheap one on a
    table made for this search's data) and ends with the learner's sentence."""
    trained = []
    _fake_table(monkeypatch, pc.get_config("pc-darts", "quick").dataset, trained)
    out = tmp_path / "run"
    assert cli_main(["search", "pc-darts", "--preset", "quick", "--epochs", "1", "--seed", "2",
                     "--retrain", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    results = summary["results"]
    found = pc.Genotype.load(out / "genotype.json")
    assert trained == [(found, 2, "cpu")]
    assert summary["preset"] == "quick" and summary["config"]["seed"] == 2
    assert summary["seed"] == 2 and results["k"] == 4 and results["edge_norm"] is True
    assert pc.Genotype.from_dict(results["genotype"]) == found
    assert results["param_free_normal"] == pc.param_free_count(found)
    assert results["retrain_accuracy"] == 0.5 and results["reference_percentile"] == 50.0
    assert "found cell: 0.500 test accuracy after retraining, better than 50% of random" in text


def _fake_table(monkeypatch, dataset, trained=None, device="CPU x86_64, 1 thread(s)"):
    """A pc-darts table for ``dataset`` (random rows 0.2/0.4/0.6/0.8) and a cheap fake of
    its training protocol (returns 0.5, records what it trained)."""
    from nas_tutorial.run import tables

    cfg = pc.get_config("pc-darts", "quick")
    protocol = {"dataset": dataset, "search_steps": cfg.steps,
                "search_multiplier": cfg.multiplier}
    rows = [{"key": f"r{i}", "group": "random", "arch": {}, "accuracy": [a, a]}
            for i, a in enumerate((0.2, 0.4, 0.6, 0.8))]
    table = tables.Table("pc-darts", {"seeds": [0, 1], "protocol": protocol, "device": device},
                         rows)
    monkeypatch.setattr(tables, "load", lambda method, preset="quick", path=None: table)

    def fake_spec(preset, dev):
        def train(arch, seed, progress=False):
            if trained is not None:
                trained.append((pc.Genotype.from_dict(arch), seed, torch.device(dev).type))
            return 0.5
        return tables.Spec("pc-darts", [], protocol, None, train)

    monkeypatch.setitem(tables._SPECS, "pc-darts", fake_spec)
    return table


def test_cli_retrain_refuses_a_table_of_other_data_before_searching(tmp_path, capsys,
                                                                     monkeypatch):
    """A table made for other data cannot place this search's cell: refused in one line,
    before minutes of search, with no run folder made."""
    _fake_table(monkeypatch, "cifar10")
    out = tmp_path / "run"
    assert cli_main(["search", "pc-darts", "--preset", "quick", "--retrain",
                     "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "cannot be placed there" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_cli_retrain_refuses_a_missing_or_stale_table_before_searching(tmp_path, capsys,
                                                                        monkeypatch):
    from nas_tutorial.run import tables

    def missing(method, preset="quick", path=None):
        raise FileNotFoundError("no pc-darts table at X; make it with `nas-tutorial table "
                                "pc-darts --preset quick`")

    monkeypatch.setattr(tables, "load", missing)
    out = tmp_path / "run"
    assert cli_main(["search", "pc-darts", "--preset", "quick", "--retrain",
                     "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "make it with" in err and len(err.strip().splitlines()) == 1 and not out.exists()
    table = _fake_table(monkeypatch, pc.get_config("pc-darts", "quick").dataset)
    table.header["protocol"] = {**table.header["protocol"], "epochs": 99}  # a stale table
    monkeypatch.setattr(tables, "load", lambda method, preset="quick", path=None: table)
    assert cli_main(["search", "pc-darts", "--preset", "quick", "--retrain",
                     "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "another protocol" in err and not out.exists()


def test_cli_resume_with_retrain_places_the_saved_run(tmp_path, capsys, monkeypatch):
    """A finished run resumed with --retrain (no --preset given) is placed in the table of
    its own data, trained on the table's device, and keeps its search files."""
    trained = []
    _fake_table(monkeypatch, pc.get_config("pc-darts", "quick").dataset, trained)
    out = tmp_path / "run"
    assert cli_main(["search", "pc-darts", "--preset", "quick", "--epochs", "1",
                     "--out", str(out)]) == 0
    first = json.loads((out / "summary.json").read_text())
    capsys.readouterr()
    monkeypatch.setenv("NAS_TUTORIAL_PRESET", "full")  # what a GPU machine would default to
    assert cli_main(["search", "pc-darts", "--resume", str(out), "--retrain"]) == 0
    s = json.loads((out / "summary.json").read_text())
    r, r0 = s["results"], first["results"]
    assert r["genotype"] == r0["genotype"] and r["retrain_accuracy"] == 0.5
    # issue 27: the truth keys of every method; the found cell's is its retraining, random
    # search's the mean of the seeds that did not pick its cell (here both seeds agree)
    assert r["best_truth"] == 0.5 and r["percentile_truth"] == 50.0
    assert r["random_budget"] >= 1 and 0.2 <= r["random_best_truth"] <= 0.8
    assert trained == [(pc.Genotype.from_dict(r0["genotype"]), 0, "cpu")]
    assert s["config"]["epochs"] == 1 and s["wall_s"] == pytest.approx(first["wall_s"])
    assert searches.table_preset(pc.SearchConfig(**s["config"])) == "quick"


def test_cli_search_summary_without_retrain(tmp_path):
    out = tmp_path / "run"
    assert cli_main(["search", "darts", "--preset", "quick", "--epochs", "1",
                     "--out", str(out)]) == 0
    s = json.loads((out / "summary.json").read_text())
    r = s["results"]
    assert r["k"] == 1 and r["edge_norm"] is False and "retrain_accuracy" not in r
    assert len(r["skips_per_epoch"]) == 1 and 0 <= r["param_free_normal"] <= r["normal_pairs"]


def test_long_preset_is_the_quick_search_given_time():
    quick, long = pc.get_config("pc-darts", "quick"), pc.get_config("pc-darts", "long")
    assert (long.C, long.epochs, long.warmup_epochs) == (16, 10, 5)
    assert long.train_images == 2 * quick.train_images and long.steps_per_epoch is None
    same = ("dataset", "image_size", "steps", "multiplier", "k", "batch_size", "arch_lr", "lr")
    assert all(getattr(long, f) == getattr(quick, f) for f in same)
    assert pc.data_preset("long") == "quick" and pc.data_preset("quick") == "quick"
    darts = pc.get_config("darts", "long")
    assert (darts.k, darts.edge_norm, darts.warmup_epochs, darts.C) == (1, False, 0, 16)
    with pytest.raises(SystemExit):
        cli_main(["search", "spos", "--preset", "long"])  # a PC-DARTS/DARTS preset only


def test_cli_long_preset_names_its_run_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli_main(["search", "pc-darts", "--preset", "long", "--epochs", "1"]) == 0
    s = json.loads((tmp_path / "runs" / "pc-darts-long-seed0" / "summary.json").read_text())
    assert s["preset"] == "long" and s["config"]["C"] == 16 and s["config"]["epochs"] == 1


@pytest.mark.parametrize("unrolled", [False, True])
def test_architecture_step_takes_no_depthwise_weight_gradient(monkeypatch, unrolled):
    """The architecture passes want d/d alpha only: no depthwise weight gradient is taken
    there, the weights require grad again afterwards, and the alpha gradient is the one
    taken the plain way (weights left requiring grad)."""
    from nas_tutorial.fast import convs

    torch.manual_seed(0)
    net = pc.SearchNetwork(4, 3, 3, k=2, steps=2, multiplier=2, in_channels=1,
                           fast=True).double()
    twin = copy.deepcopy(net)
    x, y = torch.randn(8, 1, 8, 8, dtype=torch.float64), torch.randint(0, 3, (8,))

    masks, taken = [], []
    native = convs._native

    def spy(grad, x, weight, conf, mask):
        masks.append(tuple(mask))
        return native(grad, x, weight, conf, mask)

    monkeypatch.setattr(convs, "_native", spy)
    monkeypatch.setattr(pc.distributed, "all_reduce_mean", lambda g: taken.append([t.clone() for t in g]) or g)
    arch = pc.Architect(net, _tiny(unrolled=unrolled))
    if unrolled:  # the finite differences are the frozen passes
        v = [torch.randn_like(w) for w in net.weight_parameters()]
        arch._hessian_vector_product(v, x, y)
        R = arch.r / torch.cat([t.flatten() for t in v]).norm()
        with torch.no_grad():  # the twin at w + R v, where the first gradient is taken
            for w, t in zip(twin.weight_parameters(), v):
                w.add_(t, alpha=R)
        taken = taken[:1]
    else:
        arch.step(torch.zeros(0), torch.zeros(0), x, y, lr=0.05)
    assert masks and (False, True) not in masks  # input gradients only
    assert all(w.requires_grad for w in net.weight_parameters())

    # the loss the Architect takes: fp32 first order, at least fp32 (here float64) unrolled
    loss = F.cross_entropy(twin(x) if unrolled else twin(x).float(), y)
    plain = torch.autograd.grad(loss, twin.arch_parameters())
    assert taken
    for got in taken:
        for a, b in zip(got, plain):
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
