"""A weight-sharing supernet over a search space: one set of weights that holds every candidate network.

Every candidate of the space is a :class:`~nas.model.builder.CoAtNet`; the supernet holds, for each of its
state-dict keys, one tensor at the largest shape any candidate gives that key, and a candidate takes a slice of
it (:func:`slice_for`). Which tensor a candidate key maps to (:func:`shared_key`):

- ``stages.{i}.blocks.{j}.<rest>`` of a stage whose letter is ``X`` -> ``stages.{i}.blocks.{j}.X.<rest>``: each
  block slot holds one block per letter its stage may take (an MBConv and a transformer never share weights:
  their tensors mean different things), and depth ``d`` uses the first ``d`` slots of the stage;
- ``stem.*`` and ``head.*`` keep their names (one conv stem, one head: widths by slicing);
- every key of a ViT_REL candidate (patch size ``P``) -> ``vit{P}.<key>``: the patch-stem baseline sees other
  inputs at every stage (patch embeddings, no downsampling), so it is a network of its own, shared within.

Widths by slicing: a candidate of width ``w`` takes the first ``w`` channels of every dimension (OFA,
AutoFormer), with two exceptions: ``attn.qkv`` takes the first ``w`` of each of its q, k and v thirds, and a
relative-position table (``attn.rel_bias``) takes its first heads and the centre of the table (an offset means
the same on a smaller map). Heads are ``head_dim`` channels each, so the first ``w`` channels are the first heads.

The supernet's tensors are trained through the candidates themselves (:meth:`Supernet.forward`): the
candidate's module is built by the builder (without its weight initialisation: its own weights are never
used), kept in a small cache, and run with ``torch.func.functional_call`` on slices (views) of the supernet's
tensors, so its gradients land in them and the block code is the builder's, never a second implementation.
:func:`extract` gives a standalone candidate with a copy of its slices (for BatchNorm recalibration,
fine-tuning, export).
"""

from __future__ import annotations

import functools
import itertools
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch
from torch import nn

from nas.model.arch import Architecture, BlockOptions
from nas.model.blocks import BLOCK_MODULES, ConvStem, PatchStem, RelPosAttention
from nas.model.builder import CoAtNet, Head
from nas.model.geometry import downsampled


@dataclass(frozen=True)
class SupernetSpec:
    """The choices a supernet must hold: those of a search space, per stem and stage S1..S4.

    ``blocks``/``depths``/``widths`` list each stage's choices; ``patch_sizes`` the ViT_REL patch sizes (empty:
    no ViT_REL); ``options`` every combination of block options the space offers.
    """

    image_size: int
    in_chans: int
    num_classes: int
    stem_widths: tuple[int, ...]
    stem_depths: tuple[int, ...]
    stem_stride: int
    blocks: tuple[tuple[str, ...], ...]
    depths: tuple[tuple[int, ...], ...]
    widths: tuple[tuple[int, ...], ...]
    strides: tuple[int, ...]
    patch_sizes: tuple[int, ...] = ()
    options: tuple[BlockOptions, ...] = (BlockOptions(),)

    def conv_sizes(self) -> list[int]:
        """Map side after S0..S4 of every conv-stem candidate."""
        sizes = [downsampled(self.image_size, self.stem_stride)]
        for s in self.strides:
            sizes.append(downsampled(sizes[-1], s))
        return sizes


def shared_key(arch: Architecture, key: str) -> str:
    """The supernet key of the candidate ``arch``'s state-dict key ``key``."""
    if arch.is_vit:
        return f"vit{arch.patch_size}.{key}"
    parts = key.split(".")
    if parts[0] == "stages":
        return ".".join([*parts[:4], arch.layout[int(parts[1])], *parts[4:]])
    return key


def slice_for(key: str, full: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """The slice (a view) of the supernet tensor ``full`` that a candidate tensor of ``shape`` takes."""
    if full.shape == shape:
        return full
    if key.endswith("attn.qkv.weight") or key.endswith("attn.qkv.bias"):
        out = shape[0] // 3
        grouped = full.unflatten(0, (3, full.shape[0] // 3))[:, :out]
        if len(shape) == 2:
            grouped = grouped[:, :, : shape[1]]
        return grouped.flatten(0, 1)
    if key.endswith("attn.rel_bias"):
        dh, dw = (full.shape[1] - shape[1]) // 2, (full.shape[2] - shape[2]) // 2
        return full[: shape[0], dh : dh + shape[1], dw : dw + shape[2]]
    return full[tuple(slice(0, n) for n in shape)]


def _fits(key: str, full: torch.Size, shape: torch.Size) -> bool:
    if len(full) != len(shape) or any(n > m for n, m in zip(shape, full)):
        return False
    if key.endswith("attn.qkv.weight") or key.endswith("attn.qkv.bias"):
        return shape[0] % 3 == 0
    if key.endswith("attn.rel_bias"):
        return all((m - n) % 2 == 0 for n, m in zip(shape[1:], full[1:]))
    return True


# ------------------------------------------------------------------------------------------ the shapes
def _blocks_of(spec: SupernetSpec) -> Iterable[tuple[str, nn.Module]]:
    """``(supernet prefix, module)`` for every module a candidate of ``spec`` may hold at that prefix, built on
    the meta device (shapes only); the supernet keeps, per key, the largest."""
    sizes = spec.conv_sizes()
    for w, d in itertools.product(spec.stem_widths, spec.stem_depths):
        yield "stem", ConvStem(spec.in_chans, w, d, spec.stem_stride)
    geometries = [("", "conv", sizes, spec.strides, spec.stem_widths)]
    for p in spec.patch_sizes:
        side = spec.image_size // p
        geometries.append((f"vit{p}.", "patch", [side] * 5, (1, 1, 1, 1), spec.stem_widths))
    for prefix, stem, sides, strides, stem_widths in geometries:
        if stem == "patch":
            for w in stem_widths:
                yield f"{prefix}stem", PatchStem(spec.in_chans, w, int(prefix[3:-1]))
        for i in range(4):
            letters = spec.blocks[i] if stem == "conv" else ("T",)
            before = stem_widths if i == 0 else spec.widths[i - 1]
            for letter, opts, w_in, w_out in itertools.product(letters, spec.options, before, spec.widths[i]):
                factory, tag = BLOCK_MODULES[letter], f".{letter}" if stem == "conv" else ""  # as shared_key
                yield f"{prefix}stages.{i}.blocks.0{tag}", factory(w_in, w_out, strides[i], sides[i + 1], opts, 0.0)
                for j in range(1, max(spec.depths[i])):
                    yield f"{prefix}stages.{i}.blocks.{j}{tag}", factory(w_out, w_out, 1, sides[i + 1], opts, 0.0)
        for w in spec.widths[3]:
            yield f"{prefix}head", Head(w, spec.num_classes)


@functools.lru_cache(maxsize=8)
def tensor_layout(spec: SupernetSpec) -> dict[str, tuple[torch.Size, nn.Module, str, bool]]:
    """Every tensor of the supernet of ``spec``: ``{supernet key: (largest shape, an owner module of that key (on
    the meta device), the tensor's name in it, whether it is a parameter)}``. Kept per spec (a training worker
    builds one supernet per chunk); not to be changed by the caller."""
    out: dict[str, tuple[torch.Size, nn.Module, str, bool]] = {}
    with torch.device("meta"):
        for prefix, module in _blocks_of(spec):
            tensors = [(k, v, True) for k, v in module.named_parameters()]
            tensors += [(k, v, False) for k, v in module.named_buffers() if k.rsplit(".", 1)[-1] != "rel_index"]
            for name, t, is_param in tensors:
                key = f"{prefix}.{name}"
                owner = module.get_submodule(name.rsplit(".", 1)[0]) if "." in name else module
                old = out.get(key)
                shape = t.shape if old is None else torch.Size(max(a, b) for a, b in zip(old[0], t.shape))
                out[key] = (shape, owner, name.rsplit(".", 1)[-1], is_param)
    return out


def _init(tensor: torch.Tensor, owner: nn.Module, name: str) -> None:
    """The builder's initialisation (``CoAtNet._init_weights``, the blocks' own) at the supernet's shape."""
    with torch.no_grad():
        if isinstance(owner, nn.Conv2d) and name == "weight":
            nn.init.kaiming_normal_(tensor, mode="fan_out", nonlinearity="relu")
        elif isinstance(owner, nn.Linear) and name == "weight":
            nn.init.trunc_normal_(tensor, std=0.02)
        elif isinstance(owner, RelPosAttention) and name == "rel_bias":
            nn.init.trunc_normal_(tensor, std=0.02)
        elif name in ("weight", "running_var"):  # norms' scale, BatchNorm's running variance
            nn.init.ones_(tensor)
        else:  # biases, running means, counters
            nn.init.zeros_(tensor)


class _Candidate(CoAtNet):
    """A candidate's module inside the supernet: the builder's network without its weight initialisation (its own
    weights are never used: :meth:`Supernet.forward` runs it on the supernet's), which halves its building time."""

    def _init_weights(self) -> None:
        pass


class Supernet(nn.Module):
    """Every candidate of ``spec`` in one module; its state dict holds the shared tensors by supernet key
    (:func:`shared_key`). ``init=False`` leaves the tensors uninitialised, for a state loaded next."""

    def __init__(self, spec: SupernetSpec, cache: int = 16, init: bool = True):
        super().__init__()
        self.spec = spec
        for key, (shape, owner, name, is_param) in tensor_layout(spec).items():
            dtype = torch.long if name == "num_batches_tracked" else torch.float32
            tensor = torch.empty(shape, dtype=dtype)
            if init:
                _init(tensor, owner, name)
            path, _, leaf = key.rpartition(".")
            parent = self._container(path)
            if is_param:
                parent.register_parameter(leaf, nn.Parameter(tensor))
            else:
                parent.register_buffer(leaf, tensor)
        self._cache: OrderedDict[Architecture, nn.Module] = OrderedDict()
        self._cache_size = cache
        self._own: dict[str, torch.Tensor] | None = None  # the state dict's tensors by key, kept between steps

    def _apply(self, fn, recurse: bool = True):
        self._own = None  # moving or casting replaces the buffers
        return super()._apply(fn, recurse)

    def _container(self, path: str) -> nn.Module:
        module: nn.Module = self
        for part in path.split("."):
            if part not in module._modules:
                module.add_module(part, nn.Module())
            module = module._modules[part]
        return module

    def own_tensors(self) -> dict[str, torch.Tensor]:
        """The supernet's state-dict tensors (the parameters themselves) by key, kept between steps."""
        if self._own is None:
            self._own = dict(self.state_dict(keep_vars=True))
        return self._own

    def candidate(self, arch: Architecture) -> nn.Module:
        """The module of ``arch`` whose own weights are never used (:meth:`forward` runs it on the supernet's
        slices), kept for the next call (the ``cache`` most recent). Built as the builder builds it (measured
        faster than on the meta device), on the supernet's device."""
        model = self._cache.pop(arch, None)
        if model is None:
            model = _Candidate(arch, self.spec.num_classes, self.spec.image_size, self.spec.in_chans)
            check_covered(self.own_tensors(), arch, model.state_dict())
            model.requires_grad_(False)
            device = next(self.parameters()).device
            if device.type != "cpu":
                model.to(device)
        self._cache[arch] = model
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return model

    def tensors_of(self, arch: Architecture, model: nn.Module | None = None) -> dict[str, torch.Tensor]:
        """``{candidate key: view of the supernet tensor}`` for every parameter and persistent buffer of ``arch``."""
        model = model if model is not None else self.candidate(arch)
        own = self.own_tensors()
        return {k: slice_for(k, own[shared_key(arch, k)], v.shape) for k, v in model.state_dict(keep_vars=True).items()}

    def forward(self, x: torch.Tensor, arch: Architecture) -> torch.Tensor:  # type: ignore[override]
        """The logits of candidate ``arch`` on ``x``, computed with the supernet's tensors (gradients flow into
        them; in training mode BatchNorm updates the shared running statistics)."""
        model = self.candidate(arch)
        model.train(self.training)
        return torch.func.functional_call(model, self.tensors_of(arch, model), (x,), strict=False)


def check_covered(net: Supernet | Mapping[str, torch.Tensor], arch: Architecture, state: Mapping) -> None:
    """Raise ``ValueError`` naming the first tensor of ``arch`` (its ``state``) the supernet ``net`` (or its
    state dict) does not hold at a shape it can take a slice of: a candidate outside the supernet's space."""
    own = net.state_dict() if isinstance(net, nn.Module) else net
    for key, value in state.items():
        shared = shared_key(arch, key)
        full = own.get(shared)
        if full is None or not _fits(key, full.shape, value.shape):
            have = "none" if full is None else tuple(full.shape)
            raise ValueError(
                f"{arch} is not in the supernet's space: its tensor {key} {tuple(value.shape)} has no slice in "
                f"the supernet's {shared} ({have})"
            )


def extract(
    weights: Mapping[str, torch.Tensor], arch: Architecture, num_classes: int, image_size: int, in_chans: int = 3
) -> CoAtNet:
    """A standalone network of ``arch`` holding a copy of its slices of the supernet ``weights`` (a
    :class:`Supernet`'s state dict)."""
    model = CoAtNet(arch, num_classes=num_classes, image_size=image_size, in_chans=in_chans)
    state = model.state_dict()
    check_covered(weights, arch, state)
    model.load_state_dict(
        {k: slice_for(k, weights[shared_key(arch, k)], v.shape).clone() for k, v in state.items()}, strict=True
    )
    return model
