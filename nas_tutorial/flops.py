"""Counting multiply-adds with PyTorch's own flop counter.

``torch.utils.flop_counter.FlopCounterMode`` counts the floating-point operations of every
aten op it knows (convolutions, matrix products) during one forward pass; it counts a
multiply-add as 2 FLOPs, so multiply-adds (what NAS papers call "FLOPs", e.g. PNAS's 588M
mult-adds) are half of its total. Pooling, BN and activations are not counted, as in the
papers.
"""
from __future__ import annotations

import torch
from torch import nn


def count_flops(model: nn.Module, input_size=(3, 32, 32)) -> int:
    """Multiply-adds of one forward pass on a single image of ``input_size`` (C, H, W)."""
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    p = next(model.parameters(), None)
    x = torch.zeros(1, *input_size, device=p.device if p is not None else "cpu")
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(x)
    model.train(was_training)
    return counter.get_total_flops() // 2
