"""Image models of seed 002 (ATL-PHYS-PUB-2020-018) section 4.2: DNN, CNN, DenseNet.

Images are the six layers EMB1 128x4, EMB2 16x16, EMB3 8x16, Tile0 4x4, Tile1 4x4, Tile2 2x4
(design.md section 5), normalised by the loader (fraction of the cluster energy for
classifiers). Shapes are taken from the data (:class:`DataSpec`), never hard-coded.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pionml.errors import ConfigError
from pionml.geometry import IMAGE_GROUPS
from pionml.models.base import ClusterModel, DataSpec, mlp, register
from pionml.models.heads import ScaledTanhHead

#: The three input groups of the CNN and DenseNet (seed 002 4.2.2, 4.2.3), from the geometry.
GROUPS = IMAGE_GROUPS


def upscale_group(batch_images: dict, names, size) -> torch.Tensor:
    """Stack layers ``names`` as channels at ``size`` (the first layer's grid).

    Coarser layers are up-scaled by nearest-neighbour repetition and divided by the number of
    copies, so that the energy sum of each channel is conserved. Output (B, C, h, w).
    """
    chans = []
    for name in names:
        x = batch_images[name].unsqueeze(1)  # (B, 1, h_i, w_i)
        if tuple(x.shape[-2:]) != tuple(size):
            scale = (size[0] * size[1]) / (x.shape[-2] * x.shape[-1])
            x = F.interpolate(x, size=tuple(size), mode="nearest") / scale
        chans.append(x)
    return torch.cat(chans, dim=1)


@register
class DNN(ClusterModel):
    """Merged fully connected network (seed 002 section 4.2.1, Fig. 3).

    Each layer, flattened, feeds its own branch of three hidden layers with dropout 0.2; the six
    branch outputs are concatenated and followed by another hidden layer with dropout.
    """

    name = "dnn"
    inputs = ("images",)
    defaults = {"hidden": (128, 64, 32), "merged": 64, "dropout": 0.2}
    train_defaults = {"epochs": 30, "batch_size": 256, "lr": 1e-3, "patience": 5}

    def build_body(self, spec: DataSpec, hidden, merged, dropout) -> int:
        self.layer_names = list(spec.image_shapes)
        self.branches = nn.ModuleDict({
            name: mlp((h * w, *hidden), dropout) for name, (h, w) in spec.image_shapes.items()})
        self.merge = mlp((hidden[-1] * len(self.layer_names), merged), dropout)
        return merged

    def body_forward(self, batch) -> torch.Tensor:
        feats = [self.branches[n](batch.images[n].flatten(1)) for n in self.layer_names]
        return self.merge(torch.cat(feats, dim=1))


def _conv_stack(in_ch: int, channels, kernel, pool) -> nn.Sequential:
    layers = []
    for ch in channels:
        layers += [nn.Conv2d(in_ch, ch, kernel, padding="same"), nn.ReLU()]
        if pool is not None:
            layers.append(nn.MaxPool2d(pool))
        in_ch = ch
    return nn.Sequential(*layers)


@register
class CNN(ClusterModel):
    """Convolutional classifier (seed 002 section 4.2.2, Fig. 5).

    Three branches: EMB1 alone (its fine eta strips); EMB2 and EMB3 with shared filters, EMB3
    up-scaled to the EMB2 grid (16x16); the three Tile layers up-scaled to the Tile0 grid (4x4).
    Each branch: convolutions, flatten, dense; concatenated; dense layers with dropout.
    """

    name = "cnn"
    inputs = ("images",)
    defaults = {"channels": (16, 32), "dense": 64, "dropout": 0.2}
    train_defaults = {"epochs": 25, "batch_size": 256, "lr": 1e-3, "patience": 5}

    def build_body(self, spec: DataSpec, channels, dense, dropout) -> int:
        shapes = spec.image_shapes
        self.sizes = [shapes[g[0]] for g in GROUPS]
        # EMB1 (128x4): pool along eta only; EMB2+EMB3 (16x16): 2x2 pools; Tile (4x4): no pool
        self.emb1 = _conv_stack(1, channels, (5, 3), (2, 1))
        self.emb23 = _conv_stack(2, channels, (3, 3), (2, 2))
        self.tile = _conv_stack(3, channels[:1], (3, 3), None)
        n = len(channels)
        flat = [channels[-1] * (self.sizes[0][0] // 2 ** n) * self.sizes[0][1],
                channels[-1] * (self.sizes[1][0] // 2 ** n) * (self.sizes[1][1] // 2 ** n),
                channels[0] * self.sizes[2][0] * self.sizes[2][1]]
        self.dense = nn.ModuleList(mlp((f, dense), dropout) for f in flat)
        self.merge = mlp((3 * dense, dense), dropout)
        return dense

    def body_forward(self, batch) -> torch.Tensor:
        x1 = upscale_group(batch.images, GROUPS[0], self.sizes[0])  # (B, 1, 128, 4)
        x2 = upscale_group(batch.images, GROUPS[1], self.sizes[1])  # (B, 2, 16, 16)
        x3 = upscale_group(batch.images, GROUPS[2], self.sizes[2])  # (B, 3, 4, 4)
        feats = [d(conv(x).flatten(1)) for d, conv, x in
                 zip(self.dense, (self.emb1, self.emb23, self.tile), (x1, x2, x3))]
        return self.merge(torch.cat(feats, dim=1))


NORMS = ("batch", "group", "none")


def make_norm(kind: str, channels: int) -> nn.Module:
    """The normalisation layer of a dense-block layer: ``batch`` (BatchNorm2d, Huang et al.),
    ``group`` (GroupNorm, per-sample statistics) or ``none``."""
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        groups = next(g for g in (4, 2, 1) if channels % g == 0)
        return nn.GroupNorm(groups, channels)
    if kind == "none":
        return nn.Identity()
    raise ConfigError(f"model 'densenet': unknown norm '{kind}' (choices: {', '.join(NORMS)})")


class DenseBlock(nn.Module):
    """Dense block of Huang et al. (seed 002 Ref. [40]): each layer BN-ReLU-conv3x3 sees the
    concatenation of the block input and of every previous layer's output."""

    def __init__(self, in_ch: int, n_layers: int, growth: int, norm: str = "batch"):
        super().__init__()
        self.layers = nn.ModuleList(
            nn.Sequential(make_norm(norm, in_ch + i * growth), nn.ReLU(),
                          nn.Conv2d(in_ch + i * growth, growth, 3, padding=1, bias=False))
            for i in range(n_layers))
        self.out_channels = in_ch + n_layers * growth

    def forward(self, x):
        feats = [x]
        for layer in self.layers:
            feats.append(layer(torch.cat(feats, dim=1)))
        return torch.cat(feats, dim=1)


@register
class DenseNet(ClusterModel):
    """DenseNet of seed 002 section 4.2.3 (Fig. 7): three inputs (EMB1; EMB2+EMB3 at 16x16;
    Tile0-2 at 4x4), a stem (3x3 conv + pooling of the fine grids), a dense block of 13 layers
    on each, a transition (1x1 conv + pooling),
    flatten and dense; concatenated, dense with dropout. Regression output: tanh scaled to +-5.

    The growth rate is small (4) so that it trains on a CPU.

    Changed from Huang et al.: the dense-block layers normalise with GroupNorm (``norm="group"``,
    per-cluster statistics) instead of BatchNorm (``norm="batch"``, still available). The
    energy-fraction images are sparse and heavy-tailed (empty Tile images for most pi0, a few
    cells holding most of the energy), so BatchNorm's batch statistics swing from batch to batch
    and its running averages did not describe any batch: the validation loss in eval mode
    jumped between epochs (0.58, 0.49, 0.48 while the training loss fell to 0.32), and in train
    mode a cluster's output depended on the other clusters of its batch. With GroupNorm a
    cluster's output depends on that cluster alone, in train and eval mode alike, and the
    validation loss follows the training loss.
    """

    name = "densenet"
    inputs = ("images",)
    defaults = {"n_layers": 13, "growth": 4, "transition": 8, "dense": 64, "dropout": 0.2,
                "norm": "group"}
    train_defaults = {"epochs": 20, "batch_size": 256, "lr": 1e-3, "patience": 4}

    def build_body(self, spec: DataSpec, n_layers, growth, transition, dense, dropout, norm) -> int:
        shapes = spec.image_shapes
        self.sizes = [shapes[g[0]] for g in GROUPS]
        # stem pooling (as in Huang et al.): EMB1 128x4 -> 32x4, EMB2+3 16x16 -> 8x8, Tile 4x4;
        # transition pooling after the block: 32x4 -> 16x4, 8x8 -> 4x4, 4x4 kept
        stems = [(4, 1), (2, 2), (1, 1)]
        pools = [(2, 1), (2, 2), (1, 1)]
        self.branches = nn.ModuleList()
        flats = []
        for group, size, stem, pool in zip(GROUPS, self.sizes, stems, pools):
            stem_ch = 2 * growth
            block = DenseBlock(stem_ch, n_layers, growth, norm)
            self.branches.append(nn.Sequential(
                nn.Conv2d(len(group), stem_ch, 3, padding=1), nn.AvgPool2d(stem),
                block, make_norm(norm, block.out_channels), nn.ReLU(),
                nn.Conv2d(block.out_channels, transition, 1), nn.AvgPool2d(pool), nn.Flatten(),
                nn.Dropout(dropout)))
            flats.append(transition * (size[0] // stem[0] // pool[0]) * (size[1] // stem[1] // pool[1]))
        self.dense = nn.ModuleList(mlp((f, dense), dropout) for f in flats)
        self.merge = mlp((3 * dense, dense), dropout)
        return dense

    def make_head(self, name: str, spec: dict, width: int) -> nn.Module:
        """A regression value (``value`` head, linear) is tanh scaled to +-5 (seed 002 4.2.3)."""
        if name == "value" and spec["kind"] == "linear" and spec.get("n", 1) == 1:
            return ScaledTanhHead(width, scale=5.0)
        return super().make_head(name, spec, width)

    def body_forward(self, batch) -> torch.Tensor:
        feats = [d(branch(upscale_group(batch.images, g, s))) for d, branch, g, s in
                 zip(self.dense, self.branches, GROUPS, self.sizes)]
        return self.merge(torch.cat(feats, dim=1))
