"""The weight-sharing proxy (``train.supernet``): a supernet over the whole space trained once per regime
(:func:`train_chunk`, resumable from its state), and the trials that inherit their weights from it
(:func:`inherited_trainings`, called by ``trainers.training.proxy.train_candidate``).

A supernet's training draws one candidate per step, uniformly from the space within its budgets (single-path
one-shot training, SPOS), and trains it on one batch through ``nas.model.supernet.Supernet``: every candidate's
tensors are slices of the shared ones. The state that resumes it (weights, AdamW moments, the batch generator)
is plain numpy arrays (their layout: ``trainers.training.supernet_state``), so the torch-free driver writes it
with the house's safe writer and Ray moves it without pickling modules (``nas.search.supernet``). A candidate
then takes its slices (``nas.model.supernet.extract``), its BatchNorm statistics are recomputed from its
regime's fit images, it is optionally fine-tuned for ``finetune_steps``, and it is measured exactly as the
shipped proxy measures (:func:`~trainers.training.fit.fit`).
"""

from __future__ import annotations

import dataclasses
import math
import random
import time
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import torch

from nas.model.arch import Architecture
from nas.model.supernet import Supernet, SupernetSpec, extract
from trainers.data.loading import Dataset, stratified_subset
from trainers.objectives.registry import ObjectiveConfig
from trainers.training.config import TrainConfig
from trainers.training.fit import (
    _Batches,
    _check_diverged,
    _optimizer,
    _place,
    _train_examples,
    _train_round,
    fit,
    resolve_device,
    seed_everything,
)
from trainers.training.supernet_state import (
    ADAM_STEP,
    EXP_AVG,
    EXP_AVG_SQ,
    FULL,
    GENERALIZATION,
    RNG,
    WEIGHTS,
)


def spec_of(space, num_classes: int) -> SupernetSpec:
    """The supernet of a ``nas.space.SearchSpace`` for ``num_classes`` classes."""
    return SupernetSpec(num_classes=num_classes, **space.choices())


def _train_idx(dataset: Dataset, objective: ObjectiveConfig, train: TrainConfig, regime: str) -> torch.Tensor | None:
    """The training images of ``regime``: the proxy's stratified subset (generalization) or all of them."""
    if regime == GENERALIZATION:
        return stratified_subset(dataset.y_train, objective.subset_fraction, train.seed)
    return None


def _sampler(space, dataset: Dataset, seed: int, regime: str):
    """``draw(step)``: the candidate trained at ``step``, drawn from the space by a generator seeded with the
    seed, the regime and the step (so a resumed training draws what it would have), redrawn (up to 100 times)
    while over the space's budgets."""
    from nas.model.cost import count_cost

    budgets = space.budgets

    def draw(step: int) -> Architecture:
        rng = random.Random(f"{seed}:{regime}:{step}")
        arch = space.sample(rng)
        for _ in range(100):
            if budgets.unlimited:
                break
            cost = count_cost(arch, space.image_size, dataset.num_classes, space.in_chans)
            if budgets.allows(cost):
                break
            arch = space.sample(rng)
        return arch

    return draw


# --------------------------------------------------------------------------------------------- state
def _state_arrays(net: Supernet, opt: torch.optim.Optimizer, gen: torch.Generator) -> dict[str, np.ndarray]:
    names = {id(p): k for k, p in net.named_parameters()}
    out = {WEIGHTS + k: v.detach().cpu().numpy().copy() for k, v in net.state_dict().items()}
    for group in opt.param_groups:
        for p in group["params"]:
            st = opt.state.get(p)
            if st:
                k = names[id(p)]
                out[EXP_AVG + k] = st["exp_avg"].detach().cpu().numpy().copy()
                out[EXP_AVG_SQ + k] = st["exp_avg_sq"].detach().cpu().numpy().copy()
                out[ADAM_STEP + k] = np.asarray(float(st["step"]), dtype=np.float64)
    out[RNG] = gen.get_state().numpy().copy()
    return out


def _load_state(
    net: Supernet, opt: torch.optim.Optimizer, gen: torch.Generator, arrays: Mapping[str, np.ndarray], device
) -> None:
    """Put ``arrays`` (from :func:`_state_arrays`) back into the supernet, its optimizer and its generator; a
    key or shape that does not match raises ``ValueError`` (another space's supernet)."""
    weights = {k[len(WEIGHTS) :]: torch.from_numpy(np.array(v)) for k, v in arrays.items() if k.startswith(WEIGHTS)}
    own = net.state_dict()
    missing = [k for k in own if k not in weights]
    unknown = [k for k in weights if k not in own]
    other = [k for k in own if k in weights and tuple(weights[k].shape) != tuple(own[k].shape)]
    if missing or unknown or other:
        first = (missing or unknown or other)[0]
        raise ValueError(
            f"the saved supernet does not fit this space: {len(missing)} tensor(s) missing, {len(unknown)} unknown, "
            f"{len(other)} of another shape (first: {first})"
        )
    net.load_state_dict(weights)
    params = dict(net.named_parameters())
    for key, value in arrays.items():
        if key.startswith(EXP_AVG):
            name = key[len(EXP_AVG) :]
            p = params.get(name)
            if p is None or tuple(value.shape) != tuple(p.shape):
                raise ValueError(f"the saved optimizer state of {name} does not fit this space's supernet")
            opt.state[p] = {
                "step": torch.tensor(float(arrays[ADAM_STEP + name])),
                "exp_avg": torch.from_numpy(np.array(value)).to(device),
                "exp_avg_sq": torch.from_numpy(np.array(arrays[EXP_AVG_SQ + name])).to(device),
            }
    gen.set_state(torch.from_numpy(np.array(arrays[RNG], dtype=np.uint8)))


def state_problem(space, num_classes: int, arrays: Mapping[str, np.ndarray]) -> str | None:
    """What makes ``arrays`` no state of the supernet of ``space`` (``None``: it is one): every tensor of the
    supernet, at its shape and type, and nothing else; AdamW's two moments and step count together, for
    parameters only, at their tensor's shape; a generator state of torch's size. The driver asks it of every
    checkpoint it reads, before any chunk or trial uses it."""
    from nas.model.supernet import tensor_layout

    expected = tensor_layout(spec_of(space, num_classes))
    gen_size = torch.Generator().get_state().numel()
    for key, value in arrays.items():
        if not isinstance(value, np.ndarray):
            return f"its entry {key} is not an array"
    for key, (shape, _owner, name, is_param) in expected.items():
        w = arrays.get(WEIGHTS + key)
        dtype = np.int64 if name == "num_batches_tracked" else np.float32
        if w is None:
            return f"it lacks the tensor {key} of this space's supernet"
        if tuple(w.shape) != tuple(shape) or w.dtype != dtype:
            return f"its tensor {key} is {w.dtype} {tuple(w.shape)}, not {np.dtype(dtype)} {tuple(shape)}"
        moments = [arrays.get(p + key) for p in (EXP_AVG, EXP_AVG_SQ, ADAM_STEP)]
        if any(m is not None for m in moments):
            if not is_param or any(m is None for m in moments):
                return f"its optimizer state of {key} is incomplete or belongs to no parameter"
            if any(tuple(m.shape) != tuple(shape) or m.dtype != np.float32 for m in moments[:2]):
                return f"its optimizer moments of {key} are not float32 {tuple(shape)}"
            if moments[2].shape != () or not float(moments[2]) >= 0:
                return f"its optimizer step count of {key} is not one number >= 0"
    known = {p + k for k in expected for p in (WEIGHTS, EXP_AVG, EXP_AVG_SQ, ADAM_STEP)} | {RNG}
    unknown = sorted(k for k in arrays if k not in known)
    if unknown:
        return f"it holds {len(unknown)} entries this space's supernet has not (the first: {unknown[0]})"
    rng = arrays.get(RNG)
    if rng is None or rng.dtype != np.uint8 or rng.shape != (gen_size,):
        return f"its generator state is not {gen_size} bytes"
    return None


# ------------------------------------------------------------------------------------------ training
def train_chunk(
    space,
    dataset: Dataset,
    train: TrainConfig,
    objective: ObjectiveConfig,
    regime: str,
    arrays: Mapping[str, np.ndarray] | None,
    step: int,
    *,
    device: str | torch.device | None = None,
    num_threads: int | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Train the supernet of ``regime`` from ``arrays`` (its state at ``step``; ``None`` and 0: a fresh one) for
    ``train.supernet.checkpoint_every`` steps, at most up to ``train.supernet.steps``. Returns the new state
    and the chunk's figures (``step``, ``loss``, ``acc``: the running loss and accuracy of the candidates it
    trained, ``seconds``). Raises :class:`~trainers.training.fit.Diverged` on a non-finite or exploding loss."""
    sn = train.supernet
    if sn is None:
        raise ValueError("train.supernet is not set: this protocol trains no supernet")
    if num_threads:
        torch.set_num_threads(int(num_threads))
    dev = resolve_device(train, device)
    t0 = time.perf_counter()
    seed_everything(train.seed + (0 if regime == FULL else 1))
    net = Supernet(spec_of(space, dataset.num_classes), cache=sn.cache, init=arrays is None)
    total = sn.steps
    opt_train = dataclasses.replace(train, lr=sn.lr or train.lr)
    channels_last = _place(net, train, dev)
    gen = torch.Generator(device="cpu").manual_seed(train.seed)
    opt, sched = _optimizer(net, opt_train, dev, total, start=step)
    if arrays is not None:
        _load_state(net, opt, gen, arrays, dev)  # copied into the placed tensors
    data = dataset.to(dev)
    x_all, y_all = _train_examples(data, _train_idx(dataset, objective, train, regime), dev)
    n = len(y_all)
    bs = min(train.batch_size, n)
    batches = _Batches(n, bs, max(1, n // bs), gen, dev)  # every chunk starts a permutation: resumes draw alike
    draw = _sampler(space, dataset, train.seed, regime)
    count = min(sn.checkpoint_every, total - step)
    net.train()
    loss_sum, correct, seen = _train_round(
        net,
        opt,
        sched,
        batches,
        x_all,
        y_all,
        count,
        train,
        dev,
        channels_last,
        gen,
        forward=lambda xb, k: net(xb, draw(step + k)),
    )
    running = loss_sum.item() / max(1, seen)
    chance = math.log(max(2, dataset.num_classes))
    _check_diverged(running, chance, f"step {step + count}", regime, opt_train, what="the supernet's training loss")
    figures = {
        "step": float(step + count),
        "loss": running,
        "acc": correct.item() / max(1, seen),
        "seconds": time.perf_counter() - t0,
    }
    return _state_arrays(net, opt, gen), figures


# ------------------------------------------------------------------------------------------- trials
def inherited_trainings(
    arch: Architecture,
    dataset: Dataset,
    train: TrainConfig,
    objective: ObjectiveConfig,
    weights: Mapping[str, Mapping[str, torch.Tensor]],
    size: int,
    dev: torch.device,
    limit_idx: torch.Tensor | None,
    val_idx: torch.Tensor | None,
    state: dict[str, Any],
) -> Iterator[dict[str, float]]:
    """The trial of ``arch`` under the weight-sharing proxy, as ``proxy._trainings`` streams a trained one: per
    regime, the candidate's slices of that regime's supernet (``weights``: ``{regime: {key: tensor}}``; one
    ``full`` for both with ``regimes: shared``), its BatchNorm statistics recomputed and ``finetune_steps`` of
    training (0: none), then the proxy's measurement of that regime; one round each. Returns the metrics
    (``gen``, ``cap``)."""
    import trainers.objectives.registry as obj
    from trainers.training.proxy import fit_eval_subset

    sn = train.supernet
    if sn is None or not weights:
        raise ValueError("the weight-sharing proxy needs its supernet's weights (nas-search and nas-fidelity train it)")
    ft = dataclasses.replace(train, lr=sn.finetune_lr or train.lr, warmup=0.0)
    k = dataset.num_classes
    seed_everything(train.seed)
    out: dict[str, Any] = {}
    regimes = (GENERALIZATION, FULL) if objective.mode == "both" else (FULL,)
    for regime in regimes:
        model = extract(weights.get(regime, weights.get(FULL)), arch, k, size, dataset.in_chans)
        if regime == GENERALIZATION:
            sub = stratified_subset(dataset.y_train, objective.subset_fraction, train.seed)
            res = yield from fit(
                model,
                dataset,
                ft,
                train_idx=sub,
                steps=sn.finetune_steps,
                device=dev,
                report_every=max(1, sn.finetune_steps),
                regime=GENERALIZATION,
                eval_idx=fit_eval_subset(dataset.y_train[sub], objective.train_eval_limit, train.seed),
                val_idx=val_idx,
            )
            out["gen"] = res.metrics
            state["gen"] = obj.generalization(res.metrics["val_acc"], res.metrics["train_acc"], objective)
        else:
            res = yield from fit(
                model,
                dataset,
                ft,
                steps=sn.finetune_steps,
                device=dev,
                report_every=max(1, sn.finetune_steps),
                regime=FULL,
                eval_idx=limit_idx,
                val_idx=val_idx,
            )
            out["cap"] = res.metrics
        del model, res
    return out


_WORKER: dict[str, dict[str, dict[str, torch.Tensor]]] = {}  # object id -> a trained supernet, in this process


def worker_weights(ref) -> dict[str, dict[str, torch.Tensor]]:
    """The trained supernet ``{regime: {key: tensor}}`` behind the object ref ``ref``
    (``nas.search.supernet.share_supernets``), read from the node's object store once per worker process:
    tensors over the store's read-only shared memory, never written (a trial copies its slices)."""
    import warnings

    key = ref.hex()
    if key not in _WORKER:
        import ray

        if len(_WORKER) >= 2:
            _WORKER.pop(next(iter(_WORKER)))
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            _WORKER[key] = {
                regime: {k: torch.from_numpy(v) for k, v in weights.items()} for regime, weights in ray.get(ref).items()
            }
    return _WORKER[key]
