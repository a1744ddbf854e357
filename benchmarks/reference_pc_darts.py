"""An independent PC-DARTS/DARTS supernet written like the official ``model_search.py``
(one ReLU per op, one shuffle per edge, the ``none`` op computed, beta applied per edge),
with the official search step. The tests check the library against it; the benchmark times
it as the same-machine stand-in for the official code, whose scripts no longer run on
current Python.
"""
import torch
import torch.nn.functional as F
from torch import nn

from nas_tutorial.ops import DARTS_OPS, OPS, FactorizedReduce, ReLUConvBN


def shuffle(x, groups):
    b, c, h, w = x.shape
    return x.view(b, groups, c // groups, h, w).transpose(1, 2).contiguous().view(b, c, h, w)


class RefMixedOp(nn.Module):  # official PC-DARTS MixedOp; k=1 is the DARTS one
    def __init__(self, C, stride, k):
        super().__init__()
        self.k, self.mp = k, nn.MaxPool2d(2, 2)
        self._ops = nn.ModuleList()
        for name in DARTS_OPS:
            op = OPS[name](C // k, stride, False)
            if "pool" in name:
                op = nn.Sequential(op, nn.BatchNorm2d(C // k, affine=False))
            self._ops.append(op)

    def forward(self, x, weights):
        c = x.shape[1] // self.k
        out = sum(w * op(x[:, :c]) for w, op in zip(weights, self._ops))
        if self.k == 1:
            return out
        rest = x[:, c:] if out.shape[2] == x.shape[2] else self.mp(x[:, c:])
        return shuffle(torch.cat([out, rest], 1), self.k)


class RefNetwork(nn.Module):
    def __init__(self, C, classes, layers, k, steps, mult, in_ch):
        super().__init__()
        self.steps, self.mult = steps, mult
        self.stem = nn.Sequential(nn.Conv2d(in_ch, 3 * C, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(3 * C))
        cpp, cp, cc, red_prev = 3 * C, 3 * C, C, False
        self.cells = nn.ModuleList()
        for i in range(layers):
            red = i in (layers // 3, 2 * layers // 3)
            cc = cc * 2 if red else cc
            cell = nn.Module()
            cell.reduction = red
            cell.pre0 = (FactorizedReduce(cpp, cc, affine=False) if red_prev
                         else ReLUConvBN(cpp, cc, 1, 1, 0, affine=False))
            cell.pre1 = ReLUConvBN(cp, cc, 1, 1, 0, affine=False)
            cell.ops = nn.ModuleList(RefMixedOp(cc, 2 if red and j < 2 else 1, k)
                                     for i2 in range(steps) for j in range(2 + i2))
            self.cells.append(cell)
            red_prev, cpp, cp = red, cp, mult * cc
        self.pool, self.fc = nn.AdaptiveAvgPool2d(1), nn.Linear(cp, classes)

    def forward(self, x, an, ar, bn=None, br=None):
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            a, b = (ar, br) if cell.reduction else (an, bn)
            w = F.softmax(a, -1)
            states, off = [cell.pre0(s0), cell.pre1(s1)], 0
            for i in range(self.steps):
                bw = F.softmax(b[off:off + len(states)], -1) if b is not None else None
                states.append(sum((bw[j] if bw is not None else 1.0)
                                  * cell.ops[off + j](h, w[off + j])
                                  for j, h in enumerate(states)))
                off += len(states) - 1
            s0, s1 = s1, torch.cat(states[-self.mult:], 1)
        return self.fc(self.pool(s1).flatten(1))
