"""The PC-DARTS/DARTS search step done the official way (``train_search.py``,
``architect.py``): the same-machine stand-in for the official code, whose scripts no longer
run on current Python. ``bench_pc_darts.py`` times it against the library's step.

The supernet is the library's plain one (``nas_tutorial.methods.pc_darts.SearchNetwork``,
``fast=False``), written like the official ``model_search.py``: one ReLU per op, the
``none`` op computed, a shuffle and a beta per edge (``tests/test_pc_darts.py`` holds it to
the official sums). What is official here is the step around it: the architecture step's
``loss.backward()`` computes every weight gradient too (``Architect._backward_step``), the
weight step every alpha/beta gradient, all in fp32 and NCHW.
"""
import torch
import torch.nn.functional as F
from torch import nn

from nas_tutorial.methods.pc_darts import SearchNetwork


def official_network(C: int, num_classes: int, layers: int, k: int, steps: int = 4,
                     multiplier: int = 4, in_channels: int = 3) -> SearchNetwork:
    """The official supernet: PC-DARTS's at K > 1 (with beta), DARTS's at K = 1 (without)."""
    return SearchNetwork(C, num_classes, layers, k=k, edge_norm=k > 1, steps=steps,
                         multiplier=multiplier, in_channels=in_channels, fast=False)


class OfficialStep:
    """One first-order search step as the official loop takes it: an Adam step on alpha/beta
    from a validation batch, then an SGD step on the weights from a training batch (the
    papers' optimizer settings, PC-DARTS's arch lr)."""

    def __init__(self, model: SearchNetwork, lr: float = 0.1, arch_lr: float = 6e-4,
                 grad_clip: float = 5.0):
        self.model, self.grad_clip = model, grad_clip
        self.arch_opt = torch.optim.Adam(model.arch_parameters(), lr=arch_lr, betas=(0.5, 0.999),
                                         weight_decay=1e-3)
        self.opt = torch.optim.SGD(model.weight_parameters(), lr=lr, momentum=0.9,
                                   weight_decay=3e-4)

    def __call__(self, x, y, xv, yv):
        self.arch_opt.zero_grad()
        F.cross_entropy(self.model(xv), yv).backward()  # official _backward_step: every grad
        self.arch_opt.step()
        self.opt.zero_grad()
        F.cross_entropy(self.model(x), y).backward()
        nn.utils.clip_grad_norm_(self.model.weight_parameters(), self.grad_clip)
        self.opt.step()
