"""The evaluation network: a stack of cells described by a genotype, trained from scratch.

DARTS (Liu et al., ICLR 2019), Sec. 3.3 / 4.2 and the official ``model.py`` (``NetworkCIFAR``):
a 3x3 stem to 3C channels, ``layers`` cells with reductions (channels doubled, stride 2) at
``layers//3`` and ``2*layers//3``, an optional auxiliary head on the output of the second
reduction cell (weight 0.4 in the loss, NASNet's trick), global pooling and a linear
classifier. Drop-path (FractalNet/NASNet) zeroes whole op outputs during training, never the
identity ones. PNAS cells (same genotype type) use the same network.
"""
from __future__ import annotations

import torch
from torch import nn

from .genotypes import Genotype, resolve
from .ops import OPS, FactorizedReduce, ReLUConvBN, is_identity


def drop_path(x: torch.Tensor, drop_prob: float) -> torch.Tensor:
    """Zero each sample's op output with probability ``drop_prob``, rescale the rest."""
    if drop_prob <= 0.0:
        return x
    keep = 1.0 - drop_prob
    mask = torch.empty(x.size(0), 1, 1, 1, device=x.device, dtype=x.dtype).bernoulli_(keep)
    return x / keep * mask


class Cell(nn.Module):
    """One cell: preprocess both inputs to C channels, then each node sums two ops."""

    def __init__(self, genotype: Genotype, C_prev_prev, C_prev, C, reduction, reduction_prev):
        super().__init__()
        # A reduction before us halved the size of s1 but not of s0: reduce s0 to match.
        if reduction_prev:
            self.preprocess0 = FactorizedReduce(C_prev_prev, C)
        else:
            self.preprocess0 = ReLUConvBN(C_prev_prev, C, 1, 1, 0)
        self.preprocess1 = ReLUConvBN(C_prev, C, 1, 1, 0)
        pairs = genotype.reduce if reduction else genotype.normal
        concat = genotype.reduce_concat if reduction else genotype.normal_concat
        self.reduction = reduction
        self._concat = list(concat)
        self.multiplier = len(concat)
        self._steps = len(pairs) // 2
        self._indices = [i for _, i in pairs]
        # Only ops reading the cell inputs (index 0, 1) are strided in a reduction cell.
        self._ops = nn.ModuleList(
            OPS[name](C, 2 if reduction and index < 2 else 1, True) for name, index in pairs
        )

    def forward(self, s0, s1, drop_prob: float = 0.0):
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        for i in range(self._steps):
            hs = []
            for k in (2 * i, 2 * i + 1):
                op = self._ops[k]
                h = op(states[self._indices[k]])
                if self.training and drop_prob > 0 and not is_identity(op):
                    h = drop_path(h, drop_prob)
                hs.append(h)
            states.append(hs[0] + hs[1])
        return torch.cat([states[i] for i in self._concat], dim=1)


class AuxiliaryHeadCIFAR(nn.Module):
    """NASNet/DARTS auxiliary classifier; expects an 8x8 map (32x32 input)."""

    def __init__(self, C, num_classes):
        super().__init__()
        self.features = nn.Sequential(
            nn.ReLU(inplace=True),
            nn.AvgPool2d(5, stride=3, padding=0, count_include_pad=False),  # 8x8 -> 2x2
            nn.Conv2d(C, 128, 1, bias=False),
            nn.BatchNorm2d(128),
            nn.ReLU(inplace=True),
            nn.Conv2d(128, 768, 2, bias=False),
            nn.BatchNorm2d(768),
            nn.ReLU(inplace=True),
        )
        self.classifier = nn.Linear(768, num_classes)

    def forward(self, x):
        if x.size(-1) < 5:  # smaller images (quick preset): pool to 2x2 all the same
            x = nn.functional.adaptive_avg_pool2d(x, 5)
        x = self.features(x)
        return self.classifier(x.flatten(1))


class NetworkCIFAR(nn.Module):
    """A CIFAR-layout network of ``layers`` cells with ``C`` initial cell channels.

    In training mode with ``auxiliary=True`` the forward returns ``(logits, aux_logits)``,
    otherwise ``logits``. Set ``drop_path_prob`` (the training loop ramps it per epoch).
    """

    def __init__(self, genotype: Genotype | str, C: int, num_classes: int, layers: int,
                 auxiliary: bool = False, in_channels: int = 3, drop_path: float = 0.0):
        super().__init__()
        genotype = resolve(genotype)  # a published name ("DARTS_V2") or a JSON file too
        if C < 1 or layers < 1 or num_classes < 1:
            raise ValueError(f"C, layers and num_classes must be positive (got C={C}, "
                             f"layers={layers}, num_classes={num_classes})")
        if C % 2:
            raise ValueError(f"C must be even (factorized reduce splits channels in two), got {C}")
        self.genotype = genotype
        self._layers = layers
        self._auxiliary = auxiliary
        self.drop_path_prob = drop_path

        stem_multiplier = 3
        C_curr = stem_multiplier * C
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, C_curr, 3, padding=1, bias=False),
            nn.BatchNorm2d(C_curr),
        )
        C_prev_prev, C_prev, C_curr = C_curr, C_curr, C
        self.cells = nn.ModuleList()
        reduction_prev = False
        self._aux_index = 2 * layers // 3
        C_aux = None
        for i in range(layers):
            reduction = i in (layers // 3, 2 * layers // 3)
            if reduction:
                C_curr *= 2
            cell = Cell(genotype, C_prev_prev, C_prev, C_curr, reduction, reduction_prev)
            reduction_prev = reduction
            self.cells.append(cell)
            C_prev_prev, C_prev = C_prev, cell.multiplier * C_curr
            if i == self._aux_index:
                C_aux = C_prev
        self.auxiliary_head = AuxiliaryHeadCIFAR(C_aux, num_classes) if auxiliary else None
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(C_prev, num_classes)

    def forward(self, x):
        logits_aux = None
        s0 = s1 = self.stem(x)
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1, self.drop_path_prob)
            if i == self._aux_index and self.auxiliary_head is not None and self.training:
                logits_aux = self.auxiliary_head(s1)
        logits = self.classifier(self.global_pooling(s1).flatten(1))
        if logits_aux is not None:
            return logits, logits_aux
        return logits


def count_params(model: nn.Module, include_auxiliary: bool = False) -> int:
    """Number of parameters; by default without the auxiliary head, as the papers report."""
    return sum(p.numel() for name, p in model.named_parameters()
               if include_auxiliary or "auxiliary" not in name)
