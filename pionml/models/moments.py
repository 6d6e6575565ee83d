"""The moment-based cluster calibrations (task ``calibrate``; docs/models.md):
networks that read a cluster's moments (the named feature set of
:mod:`pionml.data.features`, transformed by arXiv:2412.04370 Table 2) and predict its EM-scale
response R = E_EM / E_dep, so that E = E_EM / R.

- ``lgk``: the DNN of ATL-PHYS-PUB-2023-019 sec 4.1.1: 256-128-64-8 with 2 swish, output 2
  (tanh + 1) on the linear R; leaky Gaussian kernel loss with h = 0.1, alpha = 0.05, then a second
  stage with alpha = 0. The leak's form is lost in the text of ATL-PHYS-PUB-2023-019 pionml worked
  from: ``leak`` = ``linear`` (alpha |x|, default) or ``quadratic`` (alpha x^2), recorded with the
  run.
- ``hgm``: the deterministic network of the HEP 2025 calibration talk (Sainz), {64, 64, 64, 64} ReLU
  with a 3-mode Gaussian-mixture likelihood on log10 R (the heteroscedastic mixture loss).
- ``bnn``: arXiv:2412.04370's Bayesian version: every weight and bias Gaussian,
  q = N(mu, softplus(rho)^2), N(0, 1) prior, KL scaled by the training size; one weight sample per
  step, 50 at inference.
- ``re``: arXiv:2412.04370's repulsive ensemble: 50 such networks trained together as one batched
  module (weights (members, in, out), one ``baddbmm`` per layer for all of them), function-space
  repulsion with a Gaussian kernel of median-heuristic width, and an L2 prior / N_train.

The families own their output layer and give the calibrate task's declared forms of output
(``Task.output_forms()``) under the head names the task declares: the mixture models the
``mixture`` form, (B, S, k, 3) = (weight, mean, width) of log10 R for S weight samples (BNN),
members (RE) or 1 (HGM); ``lgk`` the ``response`` form, R (B,). Both also pass ``E_em`` through
(their ``cluster_fields``) so that the task gives E_pred from the outputs alone. The mixture
mode, moments and the uncertainty
decomposition (arXiv:2412.04370 App. D.2) are the functions below.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from pionml.errors import ConfigError
from pionml.models.base import Body, ClusterModel, DataSpec, mlp, register
from pionml.models.heads import gaussian_mixture

LEAKS = ("linear", "quadratic")
KERNEL_INPUTS = ("mean", "params")
_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


# ----------------------------------------------------------------------------- losses and maths
def lgk_loss(r_pred: torch.Tensor, r_em: torch.Tensor, h: float = 0.1, alpha: float = 0.05,
             leak: str = "linear") -> torch.Tensor:
    """Leaky Gaussian kernel loss (ATL-PHYS-PUB-2023-019 Eq. 8; its leak term is lost in the
    extraction, so the leak's form is an option), batch mean of
    -exp(-x^2 / (2 h^2)) / (sqrt(2 pi) h) + alpha * leak(x), x = R_pred / R_EM - 1."""
    x = r_pred / r_em - 1.0
    gk = -torch.exp(-0.5 * (x / h) ** 2) / (math.sqrt(2 * math.pi) * h)
    if leak not in LEAKS:
        raise ConfigError(f"unknown LGK leak '{leak}' (choices: {', '.join(LEAKS)})")
    lk = x.abs() if leak == "linear" else x * x
    return (gk + alpha * lk).mean()


def component_log_pdf(mixture: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """log(alpha_i N(y | mu_i, sigma_i)) per component; ``mixture`` (B, ..., 3), ``y`` (B,)
    broadcast over the component axes."""
    w, mu, sig = mixture[..., 0], mixture[..., 1], mixture[..., 2]
    y = y.reshape((-1,) + (1,) * (w.dim() - 1))
    return (torch.log(w.clamp_min(1e-30)) - torch.log(sig) - _LOG_SQRT_2PI
            - 0.5 * ((y - mu) / sig) ** 2)


def mixture_nll(mixture: torch.Tensor, y: torch.Tensor, per_sample: bool = False) -> torch.Tensor:
    """Negative log likelihood of ``y`` under the mixture (B, S, k, 3). Default: of the average
    of the S mixtures (the predictive density), batch mean. ``per_sample``: each of the S
    mixtures on its own, (S,) batch means (the ensemble members' own likelihoods)."""
    lp = component_log_pdf(mixture, y)  # (B, S, k)
    if per_sample:
        return -torch.logsumexp(lp, dim=-1).mean(dim=0)
    s = mixture.shape[1]
    return -(torch.logsumexp(lp.flatten(1), dim=1) - math.log(s)).mean()


def mixture_moments(mixture: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean m_s and variance v_s of each of the S mixtures: (B, S) each. The variance as
    sum_i w_i (sigma_i^2 + (mu_i - m)^2), not E[x^2] - m^2: no cancellation when the widths are
    small beside the means (an exported float32 graph gave 0 where torch gave the width)."""
    w, mu, sig = mixture[..., 0], mixture[..., 1], mixture[..., 2]
    m = (w * mu).sum(-1)
    d = mu - m[..., None]
    v = (w * (sig * sig + d * d)).sum(-1)
    return m, v


def mixture_mode(mixture: torch.Tensor, n_starts: int = 8, iterations: int = 60,
                 tol: float = 1e-7) -> torch.Tensor:
    """The mode of the average of the S mixtures (B, S, k, 3), per cluster (B,).

    Gaussian-mixture mean shift (Carreira-Perpinan, IEEE TPAMI 29 (2007) 767): from the
    component means of highest density (at most ``n_starts``), y <- sum_i r_i mu_i / sum_i r_i with
    r_i = alpha_i N(y | mu_i, sigma_i) / sigma_i^2, a fixed point at every stationary point of
    the density; the converged point of highest density is kept.
    """
    b = mixture.shape[0]
    comp = mixture.reshape(b, -1, 3)  # (B, K, 3): the S x k components, weights / S below
    w, mu, sig = comp[..., 0] / mixture.shape[1], comp[..., 1], comp[..., 2]
    logw, logsig = torch.log(w.clamp_min(1e-30)), torch.log(sig)

    def log_density(y):  # y (B, P) -> (B, P)
        z = (y[..., None] - mu[:, None, :]) / sig[:, None, :]
        return torch.logsumexp(logw[:, None] - logsig[:, None] - 0.5 * z * z, dim=-1)

    y = mu
    if y.shape[1] > n_starts:
        y = torch.gather(mu, 1, log_density(mu).topk(n_starts, dim=1).indices)
    inv, mu_inv, c = 1.0 / sig, mu / sig, logw - 3 * logsig
    if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
        # an exported graph has no data-dependent shapes: every start takes every step (the
        # points that settled stay at their fixed point, so the result is the same)
        for _ in range(iterations):
            z = y[..., None] * inv[:, None, :] - mu_inv[:, None, :]  # (B, P, K)
            r = torch.softmax(c[:, None, :] - 0.5 * z * z, dim=-1)
            y = (r * mu[:, None, :]).sum(-1)
        best = log_density(y).argmax(dim=1, keepdim=True)
        return torch.gather(y, 1, best).squeeze(1)
    # the (cluster, start) pairs still moving are iterated; most settle in a few steps
    p = y.shape[1]
    owner = torch.arange(b, device=y.device).repeat_interleave(p)
    flat = y.reshape(-1).clone()
    active = torch.arange(len(flat), device=y.device)
    for _ in range(iterations):
        o = owner[active]
        z = flat[active, None] * inv[o] - mu_inv[o]  # (n_active, K)
        r = torch.softmax(c[o] - 0.5 * z * z, dim=-1)
        new = (r * mu[o]).sum(-1)
        moving = (new - flat[active]).abs() >= tol
        flat[active] = new
        active = active[moving]
        if len(active) == 0:
            break
    y = flat.reshape(b, p)
    best = log_density(y).argmax(dim=1, keepdim=True)
    return torch.gather(y, 1, best).squeeze(1)


def mixture_summary(mixture: torch.Tensor) -> dict:
    """Per cluster, in log10 R (arXiv:2412.04370 App. D.2, Eqs 40-42): ``mode`` of the averaged
    mixture, ``mean`` (its mean), ``syst`` = sqrt(mean_s v_s), ``stat`` = the spread of the
    m_s over the S samples or members (0 for S = 1), ``tot`` = sqrt(syst^2 + stat^2)."""
    m, v = mixture_moments(mixture)
    syst2 = v.mean(1)
    stat2 = ((m - m.mean(1, keepdim=True)) ** 2).mean(1)
    return {"mode": mixture_mode(mixture), "mean": m.mean(1), "syst": syst2.sqrt(),
            "stat": stat2.sqrt(), "tot": (syst2 + stat2).sqrt()}


def rbf_repulsion(f: torch.Tensor) -> torch.Tensor:
    """Function-space repulsion of arXiv:2412.04370 Eq. 36 for members' outputs ``f`` (M, D):
    sum_j k(f_i, sg f_j) / sum_j k(sg f_i, sg f_j) per member (M,) (value 1, gradient pushing
    member i away from the others), k(f, g) = exp(-|f - g|^2 / h) with the median heuristic
    h = med^2 / ln M over the pairwise distances (arXiv:2412.04370 App. C.3)."""
    m = f.shape[0]
    g = f.detach()
    d2 = ((f[:, None, :] - g[None, :, :]) ** 2).sum(-1)  # (M, M), gradient through f_i only
    with torch.no_grad():
        off = d2[~torch.eye(m, dtype=torch.bool, device=f.device)]
        h = ((off.sqrt().median() ** 2 / math.log(m)).clamp_min(1e-12) if m > 1
             else d2.new_tensor(1.0))
    k = torch.exp(-d2 / h)
    num = k.sum(1)
    return num / num.detach()


# ----------------------------------------------------------------------------- batched layers
class BatchedLinear(nn.Module):
    """``members`` independent linear layers as one: weight (M, in, out), bias (M, 1, out);
    x (M, B, in) -> (M, B, out) with one ``baddbmm``. Initialised like ``nn.Linear``."""

    def __init__(self, members: int, n_in: int, n_out: int):
        super().__init__()
        bound = 1.0 / math.sqrt(n_in)
        self.weight = nn.Parameter(torch.empty(members, n_in, n_out).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(members, 1, n_out).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias, x, self.weight)


class BayesLinear(nn.Module):
    """A variational linear layer: every weight and bias N(mu, softplus(rho)^2) with a
    N(0, prior_sigma^2) prior. ``forward(x)`` with x (S, B, in) draws S weight samples
    (reparameterisation) and applies them together: (S, B, out)."""

    def __init__(self, n_in: int, n_out: int, init_sigma: float = 2.5e-3):
        super().__init__()
        bound = 1.0 / math.sqrt(n_in)
        init_rho = math.log(math.expm1(init_sigma))  # softplus(init_rho) = init_sigma
        self.w_mu = nn.Parameter(torch.empty(n_in, n_out).uniform_(-bound, bound))
        self.w_rho = nn.Parameter(torch.full((n_in, n_out), float(init_rho)))
        self.b_mu = nn.Parameter(torch.empty(1, n_out).uniform_(-bound, bound))
        self.b_rho = nn.Parameter(torch.full((1, n_out), float(init_rho)))

    def sample(self, s: int, generator: torch.Generator | None = None, device=None):
        """``s`` weight and bias samples: (s, in, out) and (s, 1, out)."""
        device = device if device is not None else self.w_mu.device
        ew = torch.randn((s,) + self.w_mu.shape, generator=generator, device=device)
        eb = torch.randn((s,) + self.b_mu.shape, generator=generator, device=device)
        return (self.w_mu + F.softplus(self.w_rho) * ew, self.b_mu + F.softplus(self.b_rho) * eb)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        w, b = self.sample(x.shape[0], generator, x.device)
        return torch.baddbmm(b, x, w)

    def kl(self, prior_sigma: float = 1.0) -> torch.Tensor:
        """KL(q || N(0, prior_sigma^2)) summed over the weights and biases (analytic)."""
        total = 0.0
        for mu, rho in ((self.w_mu, self.w_rho), (self.b_mu, self.b_rho)):
            var = F.softplus(rho) ** 2 / prior_sigma ** 2
            total = total + 0.5 * (var + mu * mu / prior_sigma ** 2 - 1.0 - torch.log(var)).sum()
        return total


# ----------------------------------------------------------------------------- model families
class MomentModel(ClusterModel):
    """Base of the moment families: the body reads ``batch.moments`` (spec.n_moments features)
    and the family owns its output layer; E_em is passed through for E = E_em / R."""

    role = "a moment-based calibration"
    inputs = ("moments",)
    cluster_fields = ("E_em",)
    reads_scalars = False
    supports = {"calibrate": Body(form="mixture")}
    #: the head kind of the family's form of output
    head_kind = "gaussian_mixture"
    #: what the output describes: "log10" (log10 R, the mixtures) or "linear" (R, lgk)
    target = "log10"

    @classmethod
    def bare_heads(cls) -> dict:
        """Built without a task: the head of the calibrate task's form the family gives
        (``mixture``, or ``R`` for lgk)."""
        return {"R" if cls.head_kind == "linear" else "mixture": {"kind": cls.head_kind}}

    @classmethod
    def saved_heads(cls, config: dict) -> dict:
        """A run saved before the calibrate task declared its forms of output holds a nominal
        ``response`` head; its output was the family's own (:meth:`bare_heads`)."""
        heads = config["heads"]
        return cls.bare_heads() if heads == {"response": {"kind": "linear"}} else heads

    def build_body(self, spec: DataSpec, **hyper) -> int:
        if spec.n_moments < 1:
            raise ConfigError(f"model '{self.name}' reads the cluster moments, and the data give "
                              "none (no /clusters/moment_* columns?)")
        kinds = {n: s["kind"] for n, s in self.head_specs.items()}
        if list(kinds.values()) != [self.head_kind]:
            raise ConfigError(f"model '{self.name}' gives one {self.head_kind} head; the task asks "
                              f"for {kinds}")
        self.head = next(iter(kinds))
        self.build_net(spec.n_moments, **hyper)
        return 1

    def build_net(self, n_in: int, **hyper) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def make_head(self, name, spec, width):
        return nn.Identity()

    def net_forward(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        """The family's output (the task's one head) from the moments."""
        raise NotImplementedError

    def forward(self, batch) -> dict:
        return {self.head: self.net_forward(batch.moments),
                **{f: batch.clusters[f] for f in self.cluster_fields}}


@register
class LGK(MomentModel):
    """DNN with the leaky Gaussian kernel loss (ATL-PHYS-PUB-2023-019 sec 4.1.1), on
    the linear R."""

    name = "lgk"
    supports = {"calibrate": Body(form="response")}
    head_kind = "linear"
    target = "linear"
    defaults = {"widths": (256, 128, 64, 8), "h": 0.1, "alpha": 0.05, "leak": "linear"}
    # ATL-PHYS-PUB-2023-019: Adam 1e-4, batch 4096, ~100 + ~100 epochs on 17e6 clusters; on a sample
    # 100 times smaller the same number of steps needs a smaller batch and a larger rate
    train_defaults = {"batch_size": 512, "lr": 1e-3, "stages": [
        {"name": "leaky", "epochs": 30, "lr": 1e-3, "patience": 5, "options": {"leak": True}},
        {"name": "no_leak", "epochs": 30, "lr": 1e-3, "patience": 5, "options": {"leak": False}}]}

    def build_net(self, n_in, widths, h, alpha, leak) -> None:
        if leak not in LEAKS:
            raise ConfigError(f"model 'lgk': leak must be one of {', '.join(LEAKS)}, got {leak!r}")
        sizes = (n_in, *widths)
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.out = nn.Linear(sizes[-1], 1)
        with torch.no_grad():  # start at R = 1, inside the kernel (h = 0.1) for most clusters
            self.out.bias.fill_(math.atanh(-0.5))

    def net_forward(self, x):
        for layer in self.hidden:
            x = layer(x)
            x = 2 * x * torch.sigmoid(x)  # 2 swish, beta = 1
        return 2 * (torch.tanh(self.out(x).squeeze(-1)) + 1)  # R in [0, 4]

    def get_loss(self, outputs, batch, task, leak: bool = True, **options):
        r_em = batch.clusters["E_em"] / batch.clusters["E_true"]
        return lgk_loss(outputs[self.head], r_em, self.hyper["h"],
                        self.hyper["alpha"] if leak else 0.0, self.hyper["leak"])


_MIXTURE_DEFAULTS = {"widths": (64, 64, 64, 64), "k": 3, "min_width": 1e-3}
# arXiv:2412.04370 Table 3: Adam 1e-4, batch 4096, 150 epochs, milestones 25/100 on 8.7e6 clusters
_MIXTURE_TRAIN = {"epochs": 40, "batch_size": 512, "lr": 1e-3, "patience": 6}


@register
class HGM(MomentModel):
    """Deterministic network with the heteroscedastic Gaussian-mixture loss (the HEP 2025
    calibration talk (Sainz))."""

    name = "hgm"
    defaults = dict(_MIXTURE_DEFAULTS)
    train_defaults = dict(_MIXTURE_TRAIN)

    def build_net(self, n_in, widths, k, min_width) -> None:
        self.net = mlp((n_in, *widths, 3 * k), last_activation=False)

    def net_forward(self, x):
        raw = self.net(x)
        return gaussian_mixture(raw, self.hyper["k"], self.hyper["min_width"])[:, None]


@register
class BNN(MomentModel):
    """Bayesian network with the Gaussian-mixture likelihood (arXiv:2412.04370 sec 3.3.1-3.3.2): one
    weight sample per training step, ``n_samples`` at inference; loss = NLL + KL / N_train."""

    name = "bnn"
    defaults = {**_MIXTURE_DEFAULTS, "n_samples": 50, "prior_sigma": 1.0, "init_sigma": 2.5e-3}
    train_defaults = dict(_MIXTURE_TRAIN)

    def build_net(self, n_in, widths, k, min_width, n_samples, prior_sigma, init_sigma) -> None:
        sizes = (n_in, *widths, 3 * k)
        self.layers = nn.ModuleList(BayesLinear(a, b, init_sigma)
                                    for a, b in zip(sizes[:-1], sizes[1:]))

    #: seed of the inference weight samples: the same ``n_samples`` networks for every batch,
    #: so predictions are reproducible and the exported graph holds exactly those networks
    INFERENCE_SEED = 20241205

    def _generator(self, device) -> torch.Generator | None:
        if self.training:
            return None  # a fresh sample each training step
        return torch.Generator(device=device).manual_seed(self.INFERENCE_SEED)

    def net_forward(self, x):
        s = 1 if self.training else self.hyper["n_samples"]
        gen = self._generator(x.device)
        h = x.unsqueeze(0).expand(s, -1, -1)
        for i, layer in enumerate(self.layers):
            h = layer(h, gen)
            if i < len(self.layers) - 1:
                h = torch.relu(h)
        mix = gaussian_mixture(h, self.hyper["k"], self.hyper["min_width"])  # (S, B, k, 3)
        return mix.transpose(0, 1)

    def for_export(self) -> nn.Module:
        """The ``n_samples`` inference networks, drawn as at inference, frozen into one batched
        ensemble (no random-number op in the graph): the ONNX graph gives what ``predict`` gives."""
        return _FrozenBNN(self)

    def kl(self) -> torch.Tensor:
        return sum(layer.kl(self.hyper["prior_sigma"]) for layer in self.layers)

    def get_loss(self, outputs, batch, task, **options):
        return task.loss(outputs, batch) + self.kl() / max(task.n_train, 1)


class _FrozenBNN(nn.Module):
    """A BNN's inference weight samples as fixed batched layers (see :meth:`BNN.for_export`)."""

    def __init__(self, bnn: "BNN"):
        super().__init__()
        self.k, self.min_width = bnn.hyper["k"], bnn.hyper["min_width"]
        self.head, self.passed = bnn.head, tuple(bnn.cluster_fields)
        gen = bnn._generator(bnn.layers[0].w_mu.device)
        self.layers = nn.ModuleList()
        with torch.no_grad():
            for layer in bnn.layers:
                w, b = layer.sample(bnn.hyper["n_samples"], gen)
                frozen = BatchedLinear(w.shape[0], w.shape[1], w.shape[2])
                frozen.weight.copy_(w)
                frozen.bias.copy_(b)
                self.layers.append(frozen)

    def forward(self, batch) -> dict:
        h = batch.moments.unsqueeze(0).expand(len(self.layers[0].weight), -1, -1)
        for i, layer in enumerate(self.layers):
            h = layer(h)
            if i < len(self.layers) - 1:
                h = torch.relu(h)
        mix = gaussian_mixture(h, self.k, self.min_width)
        return {self.head: mix.transpose(0, 1), **{f: batch.clusters[f] for f in self.passed}}


@register
class RepulsiveEnsemble(MomentModel):
    """``members`` networks trained together (arXiv:2412.04370 sec 3.3.3-3.3.4, App. C.2-C.3, Eq.
    36): per member its mixture NLL + repulsion / N_train + |theta|^2 / (2 sigma^2 N_train),
    averaged over the members (Eq. 36 sums them: the same minimum, a scale Adam ignores)."""

    name = "re"
    defaults = {**_MIXTURE_DEFAULTS, "members": 50, "prior_sigma": 1.0, "kernel_on": "mean"}
    train_defaults = dict(_MIXTURE_TRAIN)

    def build_net(self, n_in, widths, k, min_width, members, prior_sigma, kernel_on) -> None:
        if kernel_on not in KERNEL_INPUTS:
            raise ConfigError(f"model 're': kernel_on must be one of {', '.join(KERNEL_INPUTS)}, "
                              f"got {kernel_on!r}")
        sizes = (n_in, *widths, 3 * k)
        self.layers = nn.ModuleList(BatchedLinear(members, a, b)
                                    for a, b in zip(sizes[:-1], sizes[1:]))

    def net_forward(self, x):
        h = x.unsqueeze(0).expand(self.hyper["members"], -1, -1)
        for i, layer in enumerate(self.layers):
            h = layer(h)
            if i < len(self.layers) - 1:
                h = torch.relu(h)
        mix = gaussian_mixture(h, self.hyper["k"], self.hyper["min_width"])  # (M, B, k, 3)
        return mix.transpose(0, 1)

    def member_l2(self) -> torch.Tensor:
        """|theta_i|^2 per member (M,)."""
        return sum(p.pow(2).flatten(1).sum(1) for p in self.parameters())

    def get_loss(self, outputs, batch, task, **options):
        mix = outputs[self.head]  # (B, M, k, 3)
        nll = mixture_nll(mix, task.target_log10(batch), per_sample=True)  # (M,)
        if self.hyper["kernel_on"] == "mean":
            f = mixture_moments(mix)[0].transpose(0, 1)  # (M, B): each member's mean log10 R
        else:
            f = mix.transpose(0, 1).flatten(1)
        n = max(task.n_train, 1)
        prior = self.member_l2() / (2 * self.hyper["prior_sigma"] ** 2)
        return (nll + (rbf_repulsion(f) + prior) / n).mean()
