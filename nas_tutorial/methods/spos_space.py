"""SPOS's search space: a ShuffleNetV2 supernet of choice blocks, and its FLOPs table.

Guo et al., "Single Path One-Shot Neural Architecture Search with Uniform Sampling", ECCV
2020, and the official code (megvii-model/SinglePathOneShot, ``blocks.py``, ``network.py``,
``flops.py``):

- Sec. 3.1/4, Fig. 2: a ShuffleNetV2 supernet of choice layers, four blocks per layer
  (Shuffle 3x3, 5x5, 7x7 and Xception); a path is a tuple of choice indices passed to
  ``forward(x, path)``. ``IMAGENET`` is the paper's net, ``CIFAR`` the same with a stride-1
  stem at 32x32, ``QUICK`` a narrow one for 16x16 grey images (Fashion-MNIST, digits).
- Sec. 3.3 and its experiments (block search, channel search, both): two spaces,
  ``SPACES``. ``blocks`` (the default, as the official code searches) picks one of the four
  blocks per layer; ``channels`` picks a block *and* a scale of its mid channels (0.2 to 2.0,
  ten steps) per layer, every width sliced from one weight tensor of the widest block.
  :func:`in_space` gives a supernet config the scales of a space.
- Sec. 3.2 and 4: a path drawn uniformly, or a FLOPs bin first (:func:`sample_path`).
- Sec. 4: FLOPs and parameters of a path by lookup table (multiply-adds of convs and
  linears), what the budgets of the search are measured in.

The method that searches this space, :mod:`nas_tutorial.spos`, re-exports every name here.
"""
from __future__ import annotations

import functools
import random
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn


CHOICES = ("shuffle_3x3", "shuffle_5x5", "shuffle_7x7", "xception")  # index = choice
PUBLISHED_PATH = (2, 1, 0, 1, 2, 0, 2, 0, 2, 0, 2, 3, 0, 0, 0, 0, 3, 2, 3, 3)  # Table 3
CHANNEL_SCALES = (0.2, 0.4, 0.6, 0.8, 1.0, 1.2, 1.4, 1.6, 1.8, 2.0)  # Sec. 3.3


@dataclass(frozen=True)
class SupernetConfig:
    """The shape of a ShuffleNetV2 supernet (paper Sec. 4, Table 1)."""

    name: str
    stage_repeats: tuple = (4, 4, 8, 4)      # choice layers per stage (20 in all)
    stage_channels: tuple = (64, 160, 320, 640)  # block output channels per stage
    stem_channels: int = 16                  # 3x3 stem conv
    stem_stride: int = 2                     # 2 at 224x224 (ImageNet), 1 for small images
    last_channels: int = 1024                # 1x1 conv before global pooling
    in_channels: int = 3                     # image channels
    image_size: int = 224                    # input side in pixels (FLOPs depend on it)
    num_classes: int = 1000
    dropout: float = 0.1                     # before the bias-free classifier (official)
    channel_scales: tuple = (1.0,)           # mid-channel scales; CHANNEL_SCALES = Sec. 3.3
    flops_bins: tuple | None = None          # bin edges in MFLOPs; None = 7 equal bins

    @property
    def num_layers(self) -> int:
        return sum(self.stage_repeats)

    @property
    def num_choices(self) -> int:
        """Per layer: 4 blocks, times the channel scales when channel search is on."""
        return len(CHOICES) * len(self.channel_scales)


IMAGENET = SupernetConfig(
    "imagenet", flops_bins=(290, 300, 310, 320, 330, 340, 350, 360))  # Sec. 4 bins
CIFAR = replace(IMAGENET, name="cifar", stem_stride=1, image_size=32, num_classes=10,
                flops_bins=None)
QUICK = SupernetConfig("quick", stage_repeats=(2, 2, 2), stage_channels=(32, 64, 128),
                       stem_channels=16, stem_stride=1, last_channels=256, in_channels=1,
                       image_size=16, num_classes=10)
# The notebooks' GPU preset: 8 layers (65,536 paths) in three stages at 32 px, between QUICK
# and the paper's 20-layer CIFAR supernet; a class's few minutes on one GPU
# (nas_tutorial.run.gpu_budget).
GPU = SupernetConfig("gpu", stage_repeats=(2, 3, 3), stage_channels=(48, 96, 192),
                     stem_channels=16, stem_stride=1, last_channels=512, in_channels=3,
                     image_size=32, num_classes=10)


class PathError(ValueError):
    """A path that does not fit the supernet, or a budget no path can meet."""


SPACES = ("blocks", "channels")


def in_space(config: SupernetConfig, space: str) -> SupernetConfig:
    """``config`` with the channel scales of ``space``: ``blocks`` one scale (1.0), ``channels``
    the paper's ten (``CHANNEL_SCALES``, Sec. 3.3) unless it already has several; the name
    says which (``quick`` / ``quick-channels``)."""
    if space not in SPACES:
        raise ValueError(f"space must be one of {', '.join(SPACES)}, got {space!r}")
    base = config.name.removesuffix("-channels")
    if space == "blocks":
        return config if len(config.channel_scales) == 1 else replace(
            config, name=base, channel_scales=(1.0,))
    return config if len(config.channel_scales) > 1 else replace(
        config, name=base + "-channels", channel_scales=CHANNEL_SCALES)


def space_of(config: SupernetConfig) -> str:
    """The space a supernet config spans: ``channels`` when it has several channel scales."""
    return "channels" if len(config.channel_scales) > 1 else "blocks"


def path_key(path) -> str:
    """A path as a short string, a table's row key: the digits (``"303130"``) where every
    choice is below 10 (the block space), else joined by dashes (``"3-17-39-0-12-8"``)."""
    return ("" if max(path) < 10 else "-").join(map(str, path))


def check_path(path, config: SupernetConfig) -> tuple:
    """``path`` as a tuple of ints; raises :class:`PathError` when it does not fit."""
    path = tuple(int(c) for c in path)
    if len(path) != config.num_layers or not all(0 <= c < config.num_choices for c in path):
        raise PathError(f"a path needs {config.num_layers} choices in 0..{config.num_choices - 1}"
                        f", got {path}")
    return path


def decode(choice: int, config: SupernetConfig) -> tuple:
    """Choice index -> (block index into CHOICES, mid-channel scale)."""
    n = len(config.channel_scales)
    return choice // n, config.channel_scales[choice % n]


# -- the blocks and the network (official ``blocks.py`` / ``network.py``) -----------------
def _bn_slice(bn: nn.BatchNorm2d, x):
    """BN over the first ``x.shape[1]`` channels of a wider BN (channel search)."""
    n = x.shape[1]
    w = bn.weight[:n] if bn.affine else None
    b = bn.bias[:n] if bn.affine else None
    return F.batch_norm(x, bn.running_mean[:n], bn.running_var[:n], w, b, bn.training,
                        bn.momentum if bn.momentum is not None else 0.1, bn.eps)


class ChoiceBlock(nn.Module):
    """A ShuffleNetV2 unit with a kxk depthwise conv, or its Xception variant (3 x dw3x3).

    At stride 1 the input is split in half (channel shuffle): one half passes, the other
    goes through the main branch; at stride 2 a projection branch (dw kxk, 1x1) replaces
    the split. ``inp`` is what the main branch sees, ``mid`` its hidden width (output/2
    at scale 1.0); ``mid`` of the forward slices a wider block (channel search).
    """

    def __init__(self, inp, oup, mid, stride, kernel, xception=False, affine=True):
        super().__init__()
        self.stride, self.mid = stride, mid
        out = oup - inp
        if out <= 0 or inp % 2:
            raise ValueError(f"a block needs more output ({oup}) than input ({inp}) channels "
                             "and even channel counts")

        def conv(ci, co, k, s=1, dw=False, slim=False):
            c = nn.Conv2d(ci, co, k, s, k // 2, groups=ci if dw else 1, bias=False)
            c.slim = slim and not dw  # its output is `mid` wide: sliced in channel search
            return c

        def bn(c):
            return nn.BatchNorm2d(c, affine=affine)

        relu = nn.ReLU(inplace=True)
        if xception:  # Fig. 2(c), ``Shuffle_Xception``: dw-pw-dw-pw-dw-pw
            main = [conv(inp, inp, 3, stride, dw=True), bn(inp), conv(inp, mid, 1, slim=True),
                    bn(mid), relu, conv(mid, mid, 3, dw=True), bn(mid),
                    conv(mid, mid, 1, slim=True), bn(mid), relu, conv(mid, mid, 3, dw=True),
                    bn(mid), conv(mid, out, 1), bn(out), relu]
        else:  # Fig. 2(a,b), ``Shufflenet``: pw-dw(k)-pw
            main = [conv(inp, mid, 1, slim=True), bn(mid), relu,
                    conv(mid, mid, kernel, stride, dw=True), bn(mid), conv(mid, out, 1), bn(out),
                    relu]
        self.main = nn.Sequential(*main)
        self.proj = None
        if stride == 2:
            k = 3 if xception else kernel
            self.proj = nn.Sequential(conv(inp, inp, k, stride, dw=True), bn(inp),
                                      conv(inp, inp, 1), bn(inp), relu)

    def _sliced_main(self, x, mid):
        for m in self.main:
            if isinstance(m, nn.Conv2d):
                cin, w = x.shape[1], m.weight
                w, groups = (w[:cin], cin) if m.groups > 1 else (w[:, :cin], 1)
                w = w[:mid] if m.slim else w
                x = F.conv2d(x, w, None, m.stride, m.padding, 1, groups)
            elif isinstance(m, nn.BatchNorm2d) and x.shape[1] != m.num_features:
                x = _bn_slice(m, x)
            else:
                x = m(x)
        return x

    def forward(self, x, mid=None):
        if self.stride == 1:
            x_proj, x = channel_shuffle(x)
        else:
            x_proj = self.proj(x)
        x = self.main(x) if mid in (None, self.mid) else self._sliced_main(x, mid)
        return torch.cat((x_proj, x), 1)


def channel_shuffle(x):
    """Even channels to the first half, odd to the second (official ``channel_shuffle``)."""
    b, c, h, w = x.shape
    x = x.reshape(b * c // 2, 2, h * w).permute(1, 0, 2).reshape(2, -1, c // 2, h, w)
    return x[0], x[1]  # (B, C/2, H, W) each


def _mid(oup: int, scale: float) -> int:
    return max(1, int(oup // 2 * scale))


class Supernet(nn.Module):
    """The one-shot supernet, or with ``path`` the stand-alone network of that path.

    Supernet BN is non-affine (official supernet); a stand-alone network has affine BN and
    only the blocks of its path. ``forward(x, path)``: ``path`` selects one choice per layer;
    a stand-alone network takes no path (or its own).
    """

    def __init__(self, config: SupernetConfig = QUICK, path=None):
        super().__init__()
        self.config = config
        self.path = None if path is None else check_path(path, config)
        affine = path is not None
        c = config
        self.stem = nn.Sequential(
            nn.Conv2d(c.in_channels, c.stem_channels, 3, c.stem_stride, 1, bias=False),
            nn.BatchNorm2d(c.stem_channels, affine=affine), nn.ReLU(inplace=True))
        self.layers = nn.ModuleList()
        self.widths = []  # output channels of each choice layer
        cin, i = c.stem_channels, 0
        for repeats, oup in zip(c.stage_repeats, c.stage_channels):
            for r in range(repeats):
                stride, inp = (2, cin) if r == 0 else (1, cin // 2)
                if path is None:  # every block at the widest mid (sliced when narrower)
                    mid = _mid(oup, max(c.channel_scales))
                    blocks = [_block(b, inp, oup, mid, stride, affine) for b in range(4)]
                else:
                    b, scale = decode(self.path[i], c)
                    blocks = [_block(b, inp, oup, _mid(oup, scale), stride, affine)]
                self.layers.append(nn.ModuleList(blocks))
                self.widths.append(oup)
                cin, i = oup, i + 1
        self.head = nn.Sequential(
            nn.Conv2d(cin, c.last_channels, 1, bias=False),
            nn.BatchNorm2d(c.last_channels, affine=affine), nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(c.dropout),
            nn.Linear(c.last_channels, c.num_classes, bias=False))
        _init_weights(self)

    def forward(self, x, path=None):
        if self.path is not None:  # a stand-alone network
            if path is not None and tuple(path) != self.path:
                raise PathError(f"this network is the path {self.path}, not {tuple(path)}")
            path = self.path
        elif path is None:
            raise PathError("the supernet needs a path: model(x, path)")
        else:
            path = check_path(path, self.config)
        x = self.stem(x)  # (B, C_stem, H', W')
        for layer, choice, width in zip(self.layers, path, self.widths):
            b, scale = decode(choice, self.config)
            block = layer[0] if self.path is not None else layer[b]
            x = block(x, _mid(width, scale))  # (B, width, H_i, W_i)
        return self.head(x)  # (B, num_classes)

    def path_bns(self, path) -> list:
        """The BN layers that ``path`` runs through (all others keep their statistics)."""
        path = self.path or check_path(path, self.config)
        blocks = [layer[0] if self.path is not None else layer[decode(c, self.config)[0]]
                  for layer, c in zip(self.layers, path)]
        return [m for part in [self.stem, *blocks, self.head] for m in part.modules()
                if isinstance(m, nn.BatchNorm2d)]

    def __repr__(self) -> str:
        kind = f"path {self.path}" if self.path is not None else "supernet"
        return (f"Supernet({self.config.name}, {kind}, {self.config.num_layers} layers x "
                f"{self.config.num_choices} choices, {sum(p.numel() for p in self.parameters()):,}"
                f" params)")


def _block(b, inp, oup, mid, stride, affine):
    kernel = (3, 5, 7, 3)[b]
    return ChoiceBlock(inp, oup, mid, stride, kernel, xception=b == 3, affine=affine)


def _init_weights(model):
    """Official ``_initialize_weights``: convs N(0, 1/fan_in_channels), stem and classifier
    N(0, 0.01), BN bias 1e-4."""
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            std = 0.01 if name.startswith("stem") else 1.0 / m.weight.shape[1]
            nn.init.normal_(m.weight, 0, std)
        elif isinstance(m, nn.BatchNorm2d) and m.affine:
            nn.init.constant_(m.weight, 1)
            nn.init.constant_(m.bias, 1e-4)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)


def standalone(supernet: Supernet, path) -> Supernet:
    """The stand-alone network of ``path`` with weights and BN statistics inherited from
    ``supernet`` (sliced to the path's widths); affine BN starts at weight 1, bias 0."""
    path = check_path(path, supernet.config)
    net = Supernet(supernet.config, path).to(next(supernet.parameters()).device)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            nn.init.zeros_(m.bias)
    src = dict(supernet.named_parameters()) | dict(supernet.named_buffers())
    with torch.no_grad():
        for name, t in list(net.named_parameters()) + list(net.named_buffers()):
            parts = name.split(".")
            if parts[0] == "layers":
                parts[2] = str(decode(path[int(parts[1])], supernet.config)[0])
            s = src.get(".".join(parts))
            if s is not None:
                t.copy_(s[tuple(slice(0, n) for n in t.shape)])
    return net.eval()


# -- FLOPs and params by lookup table (official ``flops.py``) -----------------------------
def _measure(module, x):
    """Multiply-adds and weights of convs and linears (the paper's rule), on meta."""
    macs = []

    def hook(m, inp, out):
        k = m.weight[0].numel()  # (C_in/groups) * kh * kw, or in_features
        macs.append(out[0].numel() * k)

    layers = [m for m in module.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    hooks = [m.register_forward_hook(hook) for m in layers]
    out = module.eval()(x)  # eval: BN accepts a 1x1 map of one image
    for h in hooks:
        h.remove()
    return sum(macs), sum(m.weight.numel() for m in layers), out


@functools.lru_cache(maxsize=16)
def lookup_table(config: SupernetConfig) -> dict:
    """Per (layer, choice) multiply-adds and params of the stand-alone block, plus the
    fixed stem+head cost; built once per config on the meta device (no compute)."""
    c = config
    with torch.device("meta"):
        x = torch.zeros(1, c.in_channels, c.image_size, c.image_size)
        fixed_f, fixed_p, x = _measure(nn.Sequential(
            nn.Conv2d(c.in_channels, c.stem_channels, 3, c.stem_stride, 1, bias=False),
            nn.BatchNorm2d(c.stem_channels)), x)
        flops, params, cin = [], [], c.stem_channels
        for repeats, oup in zip(c.stage_repeats, c.stage_channels):
            for r in range(repeats):
                stride, inp = (2, cin) if r == 0 else (1, cin // 2)
                row = [_measure(_block(decode(ch, c)[0], inp, oup,
                                       _mid(oup, decode(ch, c)[1]), stride, True), x)
                       for ch in range(c.num_choices)]
                flops.append(tuple(m[0] for m in row))
                params.append(tuple(m[1] for m in row))
                x, cin = row[0][2], oup
        head_f, head_p, _ = _measure(nn.Sequential(
            nn.Conv2d(cin, c.last_channels, 1, bias=False), nn.BatchNorm2d(c.last_channels),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
            nn.Linear(c.last_channels, c.num_classes, bias=False)), x)
    return {"flops": tuple(flops), "params": tuple(params),
            "fixed_flops": fixed_f + head_f, "fixed_params": fixed_p + head_p}


def count_flops(path, config: SupernetConfig = IMAGENET) -> int:
    """Multiply-adds (conv + linear, Sec. 4) of the path's network on one image."""
    t = lookup_table(config)
    return t["fixed_flops"] + sum(row[c] for row, c in zip(t["flops"], check_path(path, config)))


def count_params(path, config: SupernetConfig = IMAGENET) -> int:
    """Conv and linear weights of the path's stand-alone network, the rule of the FLOPs
    count; the published path gives 3.53M ("3.5M"). Affine BN would add 29k (3.56M)."""
    t = lookup_table(config)
    return t["fixed_params"] + sum(row[c] for row, c in
                                   zip(t["params"], check_path(path, config)))


def space_range(config: SupernetConfig) -> dict:
    """Smallest and largest FLOPs and params (in millions) over every path."""
    t = lookup_table(config)
    out = {}
    for key in ("flops", "params"):
        lo = t[f"fixed_{key}"] + sum(min(r) for r in t[key])
        hi = t[f"fixed_{key}"] + sum(max(r) for r in t[key])
        out[key] = (lo / 1e6, hi / 1e6)
    return out


def check_budget(config: SupernetConfig, flops_limit=None, params_limit=None) -> None:
    """Raise :class:`PathError` when no path meets the budgets (in millions)."""
    rng = space_range(config)
    for key, limit in (("flops", flops_limit), ("params", params_limit)):
        if limit is not None and limit < rng[key][0]:
            raise PathError(f"{key} limit {limit:g}M is below the smallest path of the "
                            f"'{config.name}' space ({rng[key][0]:.3f}M; largest "
                            f"{rng[key][1]:.3f}M)")


def within_budget(path, config, flops_limit=None, params_limit=None) -> bool:
    return ((flops_limit is None or count_flops(path, config) <= flops_limit * 1e6)
            and (params_limit is None or count_params(path, config) <= params_limit * 1e6))


# -- sampling paths (Sec. 3.2 and 4) -------------------------------------------------------
def random_path(config: SupernetConfig, rng: random.Random) -> tuple:
    """One choice per layer, uniformly (Sec. 3.2, Eq. 7)."""
    return tuple(rng.randrange(config.num_choices) for _ in range(config.num_layers))


def flops_bins(config: SupernetConfig, flops_limit: float | None = None) -> tuple:
    """FLOPs bin edges in MFLOPs that training samples from (Sec. 4).

    A config with fixed bins (``IMAGENET``: the paper's 7 bins, 290-360M around its 330M
    budget) uses them whatever the limit. Elsewhere, with a budget: the same window scaled
    to it (limit x 290/330 ... limit x 360/330, 7 bins), so the supernet trains the paths the
    search will compare. Without a budget: 7 equal bins over the whole space. The bins are
    drawn uniformly, then a path uniformly inside the bin, so paths of crowded bins are drawn
    less often each (official ``get_uniform_sample_cand``)."""
    if config.flops_bins is not None:
        return config.flops_bins
    if flops_limit is not None:
        return tuple(flops_limit * (290 + 10 * k) / 330 for k in range(8))
    lo, hi = space_range(config)["flops"]
    return tuple(lo + (hi - lo) * k / 7 for k in range(8))


def sample_path(config: SupernetConfig, rng: random.Random, uniform_flops: bool = False,
                tries: int = 500, flops_limit: float | None = None) -> tuple:
    """A uniform path, or (``uniform_flops``) a FLOPs bin first (:func:`flops_bins`), then
    rejection sampling inside it, falling back to a uniform path after ``tries`` misses
    (official ``get_uniform_sample_cand``; its ``train.py`` always samples this way)."""
    if not uniform_flops:
        return random_path(config, rng)
    edges = flops_bins(config, flops_limit)
    k = rng.randrange(len(edges) - 1)
    lo, hi = edges[k] * 1e6, edges[k + 1] * 1e6
    for _ in range(tries):
        path = random_path(config, rng)
        if lo <= count_flops(path, config) <= hi:
            return path
    return random_path(config, rng)
