"""Image models of ATL-PHYS-PUB-2020-018 section 4.2: DNN, CNN, DenseNet.

Images are the six layers EMB1 128x4, EMB2 16x16, EMB3 8x16, Tile0 4x4, Tile1 4x4, Tile2 2x4
(design.md section 5), normalised by the loader (fraction of the cluster energy for
classifiers). Shapes are taken from the data (:class:`DataSpec`), never hard-coded.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from pionml.errors import ConfigError
from pionml.geometry import IMAGE_GROUPS
from pionml.models.base import Body, ClusterModel, DataSpec, mlp, register

#: The three input groups of the CNN and DenseNet (ATL-PHYS-PUB-2020-018 4.2.2, 4.2.3), from the
#: geometry.
GROUPS = IMAGE_GROUPS


def _resample(x: torch.Tensor, size: int, axis: int, conserve: bool) -> torch.Tensor:
    """Bring ``axis`` of (B, 1, h, w) to ``size`` cells: repeat each cell k times (divided by k
    when ``conserve``), or sum k neighbouring cells (averaged unless ``conserve``)."""
    n = x.shape[axis]
    if n == size:
        return x
    if size % n == 0:
        k = size // n
        x = x.repeat_interleave(k, dim=axis)
        return x / k if conserve else x
    if n % size == 0:
        k = n // size
        shape = list(x.shape)
        shape[axis:axis + 1] = [size, k]
        x = x.reshape(shape).sum(dim=axis + 1)
        return x if conserve else x / k
    raise ValueError(f"cannot bring {n} cells to {size}: not a multiple")


def upscale_group(batch_images: dict, names, size, conserve: bool = True) -> torch.Tensor:
    """Stack layers ``names`` as channels on the grid ``size``.

    Each axis is brought to the grid by repeating cells (finer grid) or summing neighbours
    (coarser grid, e.g. EMB1's 128 strips onto 16 eta cells). With ``conserve`` (energies,
    energy fractions) repeated cells share their energy, so each channel keeps its energy sum;
    without it (log energies) values are repeated or averaged. Output (B, C, h, w).
    """
    chans = []
    for name in names:
        x = batch_images[name].unsqueeze(1)  # (B, 1, h_i, w_i)
        x = _resample(x, size[0], 2, conserve)
        chans.append(_resample(x, size[1], 3, conserve))
    return torch.cat(chans, dim=1)


@register
class DNN(ClusterModel):
    """Fully connected networks of ATL-PHYS-PUB-2020-018 section 4.2.1.

    Classifier (Fig. 3): each layer, flattened, feeds its own branch of three hidden layers with
    dropout 0.2; the six branch outputs are concatenated and followed by another hidden layer.
    Regressor (Fig. 4): all 936 pixels together, each standardised (image mode
    ``standardise``), through three hidden layers with dropout 0.2; E and eta come in through
    the shared scalar branch.
    """

    name = "dnn"
    inputs = ("images",)
    defaults = {"hidden": (128, 64, 32), "merged": 64, "dropout": 0.2}
    train_defaults = {"epochs": 30, "batch_size": 256, "lr": 1e-3, "patience": 5}
    supports = {"classify": Body(),
                "regress": Body(build="build_all_pixels", forward="all_pixels_forward",
                                data={"image_mode": "standardise"}),
                "joint": Body()}

    def build_body(self, spec: DataSpec, hidden, merged, dropout) -> int:
        """The classifier: one branch per layer, merged."""
        self.layer_names = list(spec.image_shapes)
        self.branches = nn.ModuleDict({
            name: mlp((h * w, *hidden), dropout) for name, (h, w) in spec.image_shapes.items()})
        self.merge = mlp((hidden[-1] * len(self.layer_names), merged), dropout)
        return merged

    def body_forward(self, batch) -> torch.Tensor:
        feats = [self.branches[n](batch.images[n].flatten(1)) for n in self.layer_names]
        return self.merge(torch.cat(feats, dim=1))

    def build_all_pixels(self, spec: DataSpec, hidden, merged, dropout) -> int:
        """The regressor: all pixels together through one stack (``merged`` unused)."""
        self.layer_names = list(spec.image_shapes)
        n_pix = sum(h * w for h, w in spec.image_shapes.values())
        self.all_pixels = mlp((n_pix, *hidden), dropout)
        return hidden[-1]

    def all_pixels_forward(self, batch) -> torch.Tensor:  # (B, 936) pixels in
        return self.all_pixels(torch.cat([batch.images[n].flatten(1) for n in self.layer_names], 1))


NORMS = ("batch", "group", "none")


def make_norm(kind: str, channels: int, model: str = "densenet") -> nn.Module:
    """The normalisation layer of a dense-block layer: ``batch`` (BatchNorm2d, Huang et al.),
    ``group`` (GroupNorm, per-sample statistics) or ``none``."""
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        groups = next(g for g in (4, 2, 1) if channels % g == 0)
        return nn.GroupNorm(groups, channels)
    if kind == "none":
        return nn.Identity()
    raise ConfigError(f"model '{model}': unknown norm '{kind}' (choices: {', '.join(NORMS)})")


def _nhwc(x: torch.Tensor) -> torch.Tensor:
    """The images in channels-last memory order, as the CNN's convolution weights are kept:
    the same values, and on the CPU a training step of the convolution stacks 15-35 % faster
    (oneDNN's channels-last kernels; benchmarks/bench_train.py). Flattening afterwards reads
    the logical (C, H, W) order, so nothing downstream changes."""
    return x.contiguous(memory_format=torch.channels_last)


def _conv_stack(in_ch: int, channels, kernel, pool, norm: str = "none") -> nn.Sequential:
    """Convolution(-norm)-ReLU(-MaxPool) layers keeping the grid size ('same' padding; an even
    kernel, e.g. the 4x4 of the CNN regressor, is padded one cell more after than before).
    ``norm`` (:data:`NORMS`) normalises each convolution's output before the ReLU."""
    layers = []
    kh, kw = kernel
    for ch in channels:
        if kh % 2 == 0 or kw % 2 == 0:
            layers += [nn.ZeroPad2d(((kw - 1) // 2, kw // 2, (kh - 1) // 2, kh // 2)),
                       nn.Conv2d(in_ch, ch, kernel)]
        else:
            layers += [nn.Conv2d(in_ch, ch, kernel, padding="same")]
        if norm != "none":
            layers.append(make_norm(norm, ch, "cnn"))
        layers.append(nn.ReLU())
        if pool is not None:
            layers.append(nn.MaxPool2d(pool))
        in_ch = ch
    return nn.Sequential(*layers)


#: Classifier layouts of the CNN (hyper-parameter ``layout``).
CNN_LAYOUTS = ("seed002", "emb2")
#: In-model pixel scalings of the CNN classifier (hyper-parameter ``pixels``): the loader's energy
#: fractions f as they are; their square root; or ``log``, log(1 + f / f0) / log(1 + 1 / f0) with
#: f0 = :data:`LOG_PIXEL_F0` (0 stays 0, a whole cluster in one pixel is 1, and a cell of 0.1 % of
#: the cluster already reads 0.1: the soft cells and how many there are become visible beside the
#: few that hold most of the energy).
CNN_PIXELS = ("fraction", "sqrt", "log")
LOG_PIXEL_F0 = 1e-3
#: Per-layer features of the CNN's ``summary`` branch (:func:`layer_summaries`).
SUMMARY_FEATURES = ("fraction", "log_fraction", "max_fraction", "hit_pixels",
                    "eta_mean", "phi_mean", "eta_width", "phi_width")


def layer_summaries(images: dict, names) -> torch.Tensor:
    """(B, 8 x n_layers): what each layer's energy-fraction image says as a whole, computed from
    its pixels (a pure-image input; no cluster moment is read): the layer's share of the cluster
    energy f and log10(f + 1e-3), its hottest pixel, the fraction of its pixels that hold
    energy, and the energy-weighted centre and spread in eta and phi (in units of the image's
    half-width, -1 to 1). With the shares of all layers the network reads the longitudinal
    profile, and 1 - their sum is the cluster's energy outside the images (presampler, cells
    outside the window or under the image cut)."""
    out = []
    for name in names:
        x = torch.clamp(images[name], min=0.0)  # (B, h, w)
        h, w = x.shape[1], x.shape[2]
        eta = (torch.linspace(-1.0, 1.0, h, dtype=x.dtype, device=x.device) if h > 1
               else x.new_zeros(1))
        phi = (torch.linspace(-1.0, 1.0, w, dtype=x.dtype, device=x.device) if w > 1
               else x.new_zeros(1))
        f = x.sum(dim=(1, 2))
        norm = torch.clamp(f, min=1e-6)
        p_eta, p_phi = x.sum(dim=2) / norm[:, None], x.sum(dim=1) / norm[:, None]
        m_eta, m_phi = (p_eta * eta).sum(1), (p_phi * phi).sum(1)
        s_eta = torch.sqrt(torch.clamp((p_eta * eta ** 2).sum(1) - m_eta ** 2, min=0.0) + 1e-6)
        s_phi = torch.sqrt(torch.clamp((p_phi * phi ** 2).sum(1) - m_phi ** 2, min=0.0) + 1e-6)
        out += [f, torch.log10(f + 1e-3), x.flatten(1).amax(1), (x > 0).float().flatten(1).mean(1),
                m_eta, m_phi, s_eta, s_phi]
    return torch.stack(out, dim=1)


@register
class CNN(ClusterModel):
    """Convolutional networks of ATL-PHYS-PUB-2020-018 section 4.2.2: the classifier (Fig. 5)
    and, as the ``regress`` variant, the regressor (Fig. 6, :meth:`build_regressor`).

    Classifier layouts (hyper-parameter ``layout``):

    * ``seed002``, ATL-PHYS-PUB-2020-018 Fig. 5, three branches: EMB1 alone (its fine eta strips);
      EMB2 and EMB3 with shared filters, EMB3 up-scaled to the EMB2 grid (16x16); the three Tile
      layers up-scaled to the Tile0 grid (4x4). Each branch: convolutions, flatten, dense;
      concatenated; dense layers with dropout.
    * ``emb2``, the layout of the best public CNN on ATLAS single-pion clusters
      (atlas-calo-ml/caloml-atlas): EMB2 as an image (convolutions, 2x2 pools, flatten, dense),
      EMB1's 128x4 strips flattened into a dense branch, and the other layers (EMB3, Tile0-2)
      flattened into a third dense branch; concatenated, dense layers with dropout.

    ``norm`` (batch / group / none) normalises each convolution's output; ``pixels`` scales the
    images in the model (:data:`CNN_PIXELS`); ``summary`` adds a fourth branch that reads each
    layer's image as a whole (:func:`layer_summaries`: its share of the cluster energy, hottest
    pixel, hit pixels, centre and spread; computed from the pixels, no cluster moment). The
    default is the ``seed002`` layout reading the energy fractions through the ``log`` scaling
    with the summary branch (docs/models.md: each beat the paper's network on the same data, the
    ``emb2`` layout did not); ``--recipe seed002`` gives the paper's network (``seed002``
    layout, ``pixels`` = ``fraction``, no summary branch). The regressor ignores ``layout`` and
    ``pixels`` (it reads the energy fractions as they are) and has the summary branch only when
    asked (``summary`` true; docs/models.md, the charged regressor). The classifier's default widths
    (8 and 16 filters, dropout 0.3) are half the paper's (16 and 32, dropout 0.2): as good on the
    default dataset with the summary branch, at a quarter of the EMB1 branch's cost.
    """

    name = "cnn"
    inputs = ("images",)
    defaults = {"channels": (8, 16), "dense": 64, "dropout": 0.3, "layout": "seed002",
                "norm": "none", "pixels": "log", "summary": True}
    train_defaults = {"epochs": 25, "batch_size": 256, "lr": 1e-3, "patience": 5}
    #: ATL-PHYS-PUB-2020-018's training of the classifier (constant rate, early stopping, no
    #: augmentation)
    recipes = {"seed002": {"epochs": 25, "batch_size": 256, "lr": 1e-3, "patience": 5,
                           "scheduler": "none", "augment": "none"}}
    #: the classifier's alternatives (the paper's pixels, and the public CNN's layout with batch
    #: normalisation) are built, trained and exported by the registry-driven tests beside the
    #: defaults; the regressor keeps the paper's widths and dropout (ATL-PHYS-PUB-2020-018
    #: 4.2.2, Fig. 6)
    supports = {
        "classify": Body(alternatives={
            "fraction": {"channels": (16, 32), "dropout": 0.2, "pixels": "fraction",
                         "summary": False},
            "emb2": {"layout": "emb2", "norm": "batch", "pixels": "sqrt"}}),
        "regress": Body(build="build_regressor", forward="regressor_forward",
                        hyper={"channels": (16, 32), "dropout": 0.2, "summary": False},
                        alternatives={"summary": {"summary": True}}),
        "joint": Body()}
    #: ATL-PHYS-PUB-2020-018's classifier (its sec 4.2.2): its widths and dropout, the energy
    #: fractions as they are, no summary branch
    recipe_hyper = {"seed002": {"channels": (16, 32), "dropout": 0.2, "layout": "seed002",
                                "pixels": "fraction", "summary": False}}

    #: what a run saved before the hyper-parameter existed was trained with
    _saved_before = {"layout": "seed002", "norm": "none", "pixels": "fraction", "summary": False}

    @classmethod
    def from_config(cls, config: dict) -> "CNN":
        """A saved run's CNN; a run saved before ``layout``, ``norm`` and ``pixels`` existed read
        the energy fractions as they are (not today's default log pixels)."""
        config = {**config, "hyper": {**cls._saved_before, **config["hyper"]}}
        return super().from_config(config)

    def _check_choices(self, spec: DataSpec, layout, norm, pixels) -> None:
        self.sizes = [spec.image_shapes[g[0]] for g in GROUPS]
        for key, value, choices in (("layout", layout, CNN_LAYOUTS), ("norm", norm, NORMS),
                                    ("pixels", pixels, CNN_PIXELS)):
            if value not in choices:
                raise ConfigError(f"model 'cnn': unknown {key} '{value}' "
                                  f"(choices: {', '.join(choices)})")
        self.layout, self.pixels = layout, pixels

    def build_body(self, spec: DataSpec, channels, dense, dropout, layout, norm, pixels,
                   summary) -> int:
        """The classifier (Fig. 5, or the ``emb2`` layout), with the optional summary branch."""
        self._check_choices(spec, layout, norm, pixels)
        shapes = spec.image_shapes
        n = len(channels)
        if layout == "emb2":
            emb1, emb2 = GROUPS[0][0], GROUPS[1][0]
            self.rest = [name for name in shapes if name not in (emb1, emb2)]
            h2, w2 = shapes[emb2]
            self.emb2 = _conv_stack(1, channels, (3, 3), (2, 2), norm)
            flat = [channels[-1] * (h2 // 2 ** n) * (w2 // 2 ** n),
                    shapes[emb1][0] * shapes[emb1][1],
                    sum(shapes[name][0] * shapes[name][1] for name in self.rest)]
        else:
            # EMB1 (128x4): pool along eta only; EMB2+EMB3 (16x16): 2x2 pools; Tile (4x4): no pool
            self.emb1 = _conv_stack(1, channels, (5, 3), (2, 1), norm)
            self.emb23 = _conv_stack(2, channels, (3, 3), (2, 2), norm)
            self.tile = _conv_stack(3, channels[:1], (3, 3), None, norm)
            flat = [channels[-1] * (self.sizes[0][0] // 2 ** n) * self.sizes[0][1],
                    channels[-1] * (self.sizes[1][0] // 2 ** n) * (self.sizes[1][1] // 2 ** n),
                    channels[0] * self.sizes[2][0] * self.sizes[2][1]]
        self.summary = bool(summary)
        if self.summary:
            self.layer_names = list(shapes)
            flat.append(len(SUMMARY_FEATURES) * len(shapes))
        self.dense = nn.ModuleList(mlp((f, dense), dropout) for f in flat)
        self.merge = mlp((len(flat) * dense, dense), dropout)
        self.to(memory_format=torch.channels_last)  # the convolutions' weights: see _nhwc
        return dense

    def build_regressor(self, spec: DataSpec, channels, dense, dropout, layout, norm, pixels,
                        summary) -> int:
        """ATL-PHYS-PUB-2020-018 Fig. 6: all six layers on the 16x16 grid (4x4 convolutions), a
        flattened EMB1 branch, and (E, eta) through the shared scalar branch; concatenated, dense
        (``layout`` and ``pixels`` checked, unused). ``summary`` (off for the regressor by
        default) adds the layer-summary branch as in the classifier."""
        self._check_choices(spec, layout, norm, pixels)
        shapes = spec.image_shapes
        self.layer_names = list(shapes)
        self.grid = shapes[GROUPS[1][0]]  # EMB2's 16x16
        self.all_layers = _conv_stack(len(shapes), channels, (4, 4), (2, 2), norm)
        n = len(channels)
        flat = channels[-1] * (self.grid[0] // 2 ** n) * (self.grid[1] // 2 ** n)
        h1, w1 = shapes[GROUPS[0][0]]
        self.dense_all = mlp((flat, dense), dropout)
        self.emb1_flat = mlp((h1 * w1, dense), dropout)
        self.summary = bool(summary)
        if self.summary:
            self.summary_branch = mlp((len(SUMMARY_FEATURES) * len(shapes), dense), dropout)
        self.merge = mlp(((3 if self.summary else 2) * dense, dense), dropout)
        self.to(memory_format=torch.channels_last)  # the convolutions' weights: see _nhwc
        return dense

    def regressor_forward(self, batch) -> torch.Tensor:
        x = upscale_group(batch.images, self.layer_names, self.grid)  # (B, 6, 16, 16)
        a = self.dense_all(self.all_layers(_nhwc(x)).flatten(1))
        b = self.emb1_flat(batch.images[GROUPS[0][0]].flatten(1))  # (B, 512)
        feats = [a, b]
        if self.summary:
            feats.append(self.summary_branch(layer_summaries(batch.images, self.layer_names)))
        return self.merge(torch.cat(feats, dim=1))

    def body_forward(self, batch) -> torch.Tensor:
        extra = [layer_summaries(batch.images, self.layer_names)] if self.summary else []
        images = batch.images
        if self.pixels == "sqrt":
            images = {name: torch.sqrt(torch.clamp(x, min=0.0)) for name, x in images.items()}
        elif self.pixels == "log":
            scale = 1.0 / math.log1p(1.0 / LOG_PIXEL_F0)
            images = {name: torch.log1p(torch.clamp(x, min=0.0) / LOG_PIXEL_F0) * scale
                      for name, x in images.items()}
        if self.layout == "emb2":
            emb1, emb2 = GROUPS[0][0], GROUPS[1][0]
            x2 = self.emb2(_nhwc(images[emb2].unsqueeze(1))).flatten(1)  # (B, 1, 16, 16)
            x1 = images[emb1].flatten(1)  # (B, 512)
            xr = torch.cat([images[name].flatten(1) for name in self.rest], dim=1)  # (B, 168)
            feats = [d(x) for d, x in zip(self.dense, (x2, x1, xr, *extra))]
            return self.merge(torch.cat(feats, dim=1))
        x1 = upscale_group(images, GROUPS[0], self.sizes[0])  # (B, 1, 128, 4)
        x2 = upscale_group(images, GROUPS[1], self.sizes[1])  # (B, 2, 16, 16)
        x3 = upscale_group(images, GROUPS[2], self.sizes[2])  # (B, 3, 4, 4)
        feats = [d(conv(_nhwc(x)).flatten(1)) for d, conv, x in
                 zip(self.dense, (self.emb1, self.emb23, self.tile), (x1, x2, x3))]
        feats += [d(x) for d, x in zip(self.dense[3:], extra)]
        return self.merge(torch.cat(feats, dim=1))


class DenseBlock(nn.Module):
    """Dense block of Huang et al. (ATL-PHYS-PUB-2020-018 Ref. [40]): each layer BN-ReLU-conv3x3
    sees the concatenation of the block input and of every previous layer's output."""

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
    """DenseNet of ATL-PHYS-PUB-2020-018 section 4.2.3 (Fig. 7): three inputs (EMB1; EMB2+EMB3
    at 16x16; Tile0-2 at 4x4), a stem (3x3 conv + pooling of the fine grids), a dense block of
    13 layers on each, a transition (1x1 conv + pooling), flatten and dense; concatenated, dense
    with dropout. Regression output: tanh scaled to +-5.

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
    #: the regressor reads log cell energies (4.2.3), averaged rather than summed when a layer
    #: is brought to a coarser grid, and its value is tanh scaled to +-5
    supports = {"classify": Body(),
                "regress": Body(data={"image_mode": "log"},
                                head_kinds={"linear": {"kind": "scaled_tanh", "scale": 5.0}}),
                "joint": Body()}
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
            flats.append(transition * (size[0] // stem[0] // pool[0])
                         * (size[1] // stem[1] // pool[1]))
        self.dense = nn.ModuleList(mlp((f, dense), dropout) for f in flats)
        self.merge = mlp((3 * dense, dense), dropout)
        return dense

    def body_forward(self, batch) -> torch.Tensor:
        conserve = self.body.data.get("image_mode") != "log"  # log energies are not summed
        feats = [d(branch(upscale_group(batch.images, g, s, conserve))) for d, branch, g, s in
                 zip(self.dense, self.branches, GROUPS, self.sizes)]
        return self.merge(torch.cat(feats, dim=1))
