"""Training-free (zero-cost) proxies: score an untrained candidate from one batch in well under a second.

:func:`zero_cost_scores` runs the proxies of ``trainers.objectives.registry.ZERO_COST`` (each a function
of this module, by name) on one architecture. Every proxy builds its
own freshly initialised model from the seed (so proxies do not interfere and a score does not depend on
which others ran), and for every proxy *higher means better predicted accuracy*:

==========  ==========================================================================================
params      parameter count (``nas.model.cost.count_cost``, no model built); bigger is better.
macs        multiply-accumulates (``count_cost``); bigger is better.
synflow     log of the SynFlow saliency (Tanaka et al. 2020; Abdelfattah et al. 2021); bigger is better.
naswot      log-determinant of the activation-pattern kernel (Mellor et al. 2021); bigger is better.
grad_norm   L2 norm of the cross-entropy gradient over all parameters; bigger is better.
snip        SNIP saliency, sum of |theta * dL/dtheta| (Lee et al. 2019); bigger is better.
jacov       Jacobian covariance (Mellor et al. 2020, v1), already negated so bigger is better.
==========  ==========================================================================================

No global state changes: the seed is applied inside ``torch.random.fork_rng`` (the caller's RNG is left
as it was), grad mode is set with context managers and hooks are removed. Models are built on the
dataset's device.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nas.errors import UserError
from nas.model.arch import Architecture
from nas.model.builder import CoAtNet, build_model
from nas.model.cost import count_cost
from trainers.data.loading import Dataset
from trainers.objectives.registry import ZERO_COST

# Rectifier-like modules whose input sign gives NASWOT's binary code. ``nas.model.blocks`` uses only nn.GELU
# (stem, MBConv, squeeze-excite, transformer MLP); the others are covered in case blocks change.
ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.Hardswish, nn.Mish, nn.ELU, nn.CELU, nn.SELU)
_NORMS = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm)  # LayerNorm2d is a LayerNorm


@dataclass(frozen=True)
class ProxyInput:
    """What every proxy gets: the candidate, one batch of images/labels and the model's input/output."""

    arch: Architecture
    x: torch.Tensor
    y: torch.Tensor
    num_classes: int
    image_size: int
    in_chans: int
    seed: int = 0

    def build(self) -> CoAtNet:
        """A fresh model initialised from ``seed`` on the batch's device, without touching the caller's RNG."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            model = build_model(
                self.arch, num_classes=self.num_classes, image_size=self.image_size, in_chans=self.in_chans
            )
        return model.to(self.x.device)


def _cost(inp: ProxyInput):
    return count_cost(inp.arch, image_size=inp.image_size, num_classes=inp.num_classes, in_chans=inp.in_chans)


def params(inp: ProxyInput) -> float:
    """Number of parameters."""
    return float(_cost(inp).params)


def macs(inp: ProxyInput) -> float:
    """Multiply-accumulates of one image."""
    return float(_cost(inp).macs)


def _log(value: float) -> float:
    """``log(value)`` that returns -inf for 0, inf for inf and NaN for NaN or a negative value."""
    if math.isnan(value) or value < 0:
        return math.nan
    return -math.inf if value == 0 else math.log(value)


def synflow(inp: ProxyInput) -> float:
    """log of sum over all parameters of |theta * dR/dtheta|, R the sum of the logits.

    Following the zero-cost-proxies reference (its default ``synflow`` scores the ``bn=False`` copy of the
    net), every normalisation layer is replaced by an identity so it cannot normalise the signal away:
    BatchNorm, and likewise the LayerNorms of the transformer blocks and the head (left in, they make the
    score blind to depth: a deeper net scored lower). Their affine parameters are 1 and 0 at initialisation,
    so nothing else changes. Parameters are replaced by their absolute values; the model runs in float64,
    eval mode, on one all-ones image. A saliency beyond float64 (logits or gradients overflowing, as in
    deep transformer stacks whose attention logits square at every block) gives inf.
    """
    model = inp.build()
    for module in list(model.modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, _NORMS):
                setattr(module, child_name, nn.Identity())
    model.double().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.abs_()
    x = torch.ones(1, inp.in_chans, inp.image_size, inp.image_size, dtype=torch.float64, device=inp.x.device)
    with torch.enable_grad():
        r = model(x).sum()
        if not torch.isfinite(r):
            return math.inf
        r.backward()
    grads = [(p, p.grad) for p in model.parameters() if p.grad is not None]
    if not all(torch.isfinite(g).all() for _, g in grads):
        return math.inf  # inf - inf in a backward that overflowed (attention over 1e100 logits)
    with torch.no_grad():
        total = sum((p * g).abs().sum() for p, g in grads)
    return _log(float(total))


def naswot(inp: ProxyInput) -> float:
    """log|K| of the Hamming kernel of binary activation codes over the batch (train mode, no grad).

    Forward hooks on every rectifier-like module (:data:`ACTIVATIONS`; the CoAtNet blocks use nn.GELU only)
    record ``code = input > 0``; K = C C^T + (1-C)(1-C)^T is summed over those layers. Functional
    nonlinearities (the sigmoid gate of squeeze-excite, the attention softmax) are not rectifiers and are not
    counted. A singular K (two identical codes) gives -inf.
    """
    model = inp.build().train()
    n = inp.x.shape[0]
    kernel = torch.zeros(n, n, dtype=torch.float64, device=inp.x.device)

    def hook(_module: nn.Module, args: tuple, _out: torch.Tensor) -> None:
        code = (args[0].reshape(n, -1) > 0).float() * 2 - 1  # +-1: (s s^T + N) / 2 == C C^T + (1-C)(1-C)^T
        kernel.add_(((code @ code.T + code.shape[1]) / 2).double())

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, ACTIVATIONS)]
    try:
        with torch.no_grad():
            model(inp.x)
    finally:
        for h in handles:
            h.remove()
    sign, logdet = torch.linalg.slogdet(kernel)
    return float(logdet) if sign > 0 else -math.inf


def _loss_grads(inp: ProxyInput) -> nn.Module:
    """A fresh model in train mode after one backward of the batch's cross-entropy."""
    model = inp.build().train()
    with torch.enable_grad():
        F.cross_entropy(model(inp.x), inp.y).backward()
    return model


def grad_norm(inp: ProxyInput) -> float:
    """L2 norm of the cross-entropy gradient of all parameters together (train mode)."""
    grads = [p.grad.double().pow(2).sum() for p in _loss_grads(inp).parameters() if p.grad is not None]
    return float(torch.stack(grads).sum().sqrt())


def snip(inp: ProxyInput) -> float:
    """Sum over all parameters of |theta * dL/dtheta| for the batch's cross-entropy (train mode)."""
    model = _loss_grads(inp)
    return float(sum((p.detach() * p.grad).double().abs().sum() for p in model.parameters() if p.grad is not None))


def jacov(inp: ProxyInput) -> float:
    """-sum(log(v + k) + 1 / (v + k)), k = 1e-5, over the eigenvalues v of the correlation matrix of the
    per-image input gradients of the summed logits (train mode, as the reference ``jacob_cov``). The
    maximum, -batch_size, is reached by uncorrelated Jacobians. NaN when a Jacobian is constant (its
    correlation is undefined)."""
    model = inp.build().train()
    x = inp.x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        out = model(x)
        (jac,) = torch.autograd.grad(out, x, torch.ones_like(out))
    corr = torch.corrcoef(jac.reshape(len(jac), -1).double())
    if not torch.isfinite(corr).all():
        return math.nan
    v = torch.linalg.eigvalsh(corr)
    k = 1e-5
    return float(-(torch.log(v + k) + 1.0 / (v + k)).sum())


def proxy_batch(dataset: Dataset, batch_size: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``batch_size`` training examples chosen from ``seed``, stratified: classes take turns, each class's
    examples in a seeded random order (so every class is present when the batch is large enough)."""
    y = dataset.y_train.cpu().numpy()
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(y))
    rank = np.zeros(len(y), dtype=np.int64)
    ys = y[perm]
    for c in np.unique(ys):
        rank[ys == c] = np.arange(int((ys == c).sum()))
    pick = torch.from_numpy(np.sort(perm[np.argsort(rank, kind="stable")[:batch_size]]))
    pick = pick.to(dataset.y_train.device)
    return dataset.x_train[pick], dataset.y_train[pick]


def _adapt(x: torch.Tensor, image_size: int, in_chans: int) -> torch.Tensor:
    """The batch at ``image_size`` with ``in_chans`` channels (grey <-> RGB only)."""
    c = x.shape[1]
    if c != in_chans:
        if c == 1:
            x = x.expand(-1, in_chans, -1, -1)
        elif in_chans == 1:
            x = x.mean(1, keepdim=True)
        else:
            raise UserError(
                f"the data has {c} channels but in_chans is {in_chans}; only grey <-> RGB is "
                "converted. Pass in_chans matching the data (or leave it unset)."
            )
    if x.shape[-1] != image_size or x.shape[-2] != image_size:
        x = F.interpolate(
            x, size=(image_size, image_size), mode="bilinear", align_corners=False, antialias=x.shape[-1] > image_size
        )
    return x.contiguous()


def zero_cost_scores(
    arch: Architecture,
    dataset: Dataset,
    names: Iterable[str] | None = None,
    *,
    batch_size: int = 64,
    seed: int = 0,
    image_size: int | None = None,
    num_classes: int | None = None,
    in_chans: int | None = None,
) -> dict[str, float]:
    """Scores of ``arch`` by the proxies ``names`` (default: all of :data:`ZERO_COST`), in that order.

    The batch is :func:`proxy_batch` of the training split; ``seed`` picks it and initialises every model.
    Image size, classes and channels default to the dataset's; another size resizes the batch.
    """
    names = list(ZERO_COST) if names is None else [names] if isinstance(names, str) else list(names)
    unknown = [n for n in names if n not in ZERO_COST]
    if unknown:
        raise UserError(f"unknown zero-cost proxy {', '.join(map(repr, unknown))}; known: {', '.join(ZERO_COST)}.")
    if batch_size < 2:
        raise UserError(f"batch_size must be at least 2 for zero-cost proxies, got {batch_size}.")
    image_size = dataset.image_size if image_size is None else int(image_size)
    num_classes = dataset.num_classes if num_classes is None else int(num_classes)
    in_chans = dataset.in_chans if in_chans is None else int(in_chans)
    x, y = proxy_batch(dataset, batch_size, seed)
    if len(y) and int(y.max()) >= num_classes:
        raise UserError(
            f"num_classes is {num_classes} but the data has labels up to {int(y.max())}; "
            "leave num_classes unset to use the dataset's."
        )
    inp = ProxyInput(arch, _adapt(x, image_size, in_chans), y, num_classes, image_size, in_chans, seed)
    return {name: float(ZERO_COST[name](inp)) for name in names}


if __name__ == "__main__":  # seconds per proxy on one CPU thread: python -m trainers.objectives.zerocost
    import time

    from trainers.data.config import DataConfig
    from trainers.data.loading import load_dataset

    torch.set_num_threads(1)
    data = load_dataset(DataConfig(name="synthetic", synthetic_samples=400), 32, 3)
    for text in (
        "C-C-T-T L=2,1,1,1,1 D=16,16,32,32,64",
        "C-C-C-C L=2,2,2,3,2 D=32,48,64,128,256",
        "C-C-T-T L=2,2,3,4,2 D=32,48,96,160,256",
        "C-T-T-T L=2,2,2,3,2 D=32,64,128,160,256",
        "ViT_REL L=1,2,2,2,2 D=128,128,128,128,128 patch=8",
    ):
        a = Architecture.parse(text)
        print(f"{text}  ({count_cost(a, 32, data.num_classes, 3)})")
        for proxy in ZERO_COST:
            zero_cost_scores(a, data, [proxy])  # warm-up
            t0 = time.perf_counter()
            score = zero_cost_scores(a, data, [proxy])[proxy]
            print(f"  {proxy:10s} {time.perf_counter() - t0:7.3f} s  {score:.6g}")
