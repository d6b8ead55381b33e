"""`Architecture`: one point of the search space, frozen and hashable.

An architecture names, for the stem S0 and the stages S1-S4 of a CoAtNet-style network, the block type,
the depth L and the width D, plus the block options. It knows nothing of torch; ``nas.model.builder`` builds it.

String form (``str(arch)``)::

    C-C-T-T L=2,2,3,5,2 D=64,96,192,384,768

``L`` and ``D`` list S0..S4. Non-default block options follow as ``key=value`` pairs, so the string is the
canonical form and ``arch.id`` (a hash of it) is stable across runs, machines and Python versions.

The block letters of a layout come from one table, :data:`BLOCKS`. The builder (``nas.model.blocks.BLOCK_MODULES``)
and the cost model (``nas.model.cost.BLOCK_COSTS``) each map every letter to their implementation and check at import
that they cover exactly this table; the space validator reads the table's properties (``attention``,
``order``, ``default_choice``). Adding a letter is one entry here, one module in ``nas/model/blocks.py`` and one cost
function in ``nas/model/cost.py``.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from nas.errors import ConfigError, check_keys, parse_dataclass


@dataclass(frozen=True)
class BlockKind:
    """One block letter of a layout and what the torch-free rooms need to know about it."""

    letter: str
    name: str
    """Short name shown in messages, e.g. ``MBConv``."""
    description: str
    attention: bool
    """Splits its width into ``head_dim``-sized heads: every width it may get must be a multiple of head_dim."""
    order: int
    """``rules.monotone``: along S1..S4 a stage's letter never has a lower order than the stage before it."""
    default_choice: bool = True
    """In a stage's block choices when ``space.stages.Sx.block`` is omitted."""


BLOCKS: dict[str, BlockKind] = {
    kind.letter: kind
    for kind in (
        BlockKind(
            "C",
            "MBConv",
            "pre-activation inverted bottleneck with depthwise 3x3 conv and squeeze-excitation",
            attention=False,
            order=0,
        ),
        BlockKind(
            "T",
            "relative-attention transformer",
            "pre-norm self-attention with a 2-D relative position bias (paper Eq. 3) and an FFN",
            attention=True,
            order=1,
        ),
    )
}
"""The block letters, in their canonical order (choices and layouts are listed in this order)."""

VIT_BLOCK = "T"
"""The letter of every stage of the ViT_REL baseline."""
VIT_REL = "ViT_REL"
DEFAULT_STRIDES = (2, 2, 2, 2)
"""The stride of each stage S1..S4's first block in the paper: every stage halves the map."""


def known_blocks() -> str:
    """The known letters for messages: ``C, T (C = MBConv, T = relative-attention transformer)``."""
    return f"{', '.join(BLOCKS)} ({', '.join(f'{k.letter} = {k.name}' for k in BLOCKS.values())})"


def is_block_letter(value: Any) -> bool:
    """Whether ``value`` is a letter of :data:`BLOCKS` (any value, hashable or not)."""
    return isinstance(value, str) and value in BLOCKS


def check_block_table(table: Mapping[str, Any], name: str) -> None:
    """Raise ``RuntimeError`` (a bug in the package, not a user error) unless ``table`` has exactly the letters
    of :data:`BLOCKS`; the builder's and the cost model's letter tables call it at import."""
    missing, extra = [b for b in BLOCKS if b not in table], [b for b in table if b not in BLOCKS]
    if missing or extra:
        raise RuntimeError(
            f"{name} must map exactly the block letters of nas.model.arch.BLOCKS ({', '.join(BLOCKS)}): "
            f"missing {missing}, not in BLOCKS {extra}"
        )


def check_layout(letters: Sequence[Any], file: str | None, key: str, value: Any) -> tuple[str, ...]:
    """Four known block letters as a tuple; else a :class:`ConfigError` naming the problem and the known letters."""
    allowed = f"four block letters joined by '-' (e.g. 'C-C-T-T'), each one of {known_blocks()}; or '{VIT_REL}'"
    if len(letters) != 4:
        raise ConfigError(file, key, "is not a layout of four stages", allowed, value=value)
    for letter in letters:
        if not is_block_letter(letter):
            raise ConfigError(file, key, f"has an unknown block letter {letter!r}", allowed, value=value)
    return tuple(letters)


RelAttn = Literal["pre", "post", "none"]
Downsample = Literal["conv1x1", "dwconv"]


@dataclass(frozen=True)
class BlockOptions:
    """Options shared by all blocks of one network (paper defaults)."""

    mbconv_expansion: float = field(default=4.0, metadata={"check": lambda v: 1 <= v <= 8, "allowed": "1..8"})
    """Inverted-bottleneck expansion of MBConv blocks."""
    se_ratio: float = field(default=0.25, metadata={"check": lambda v: 0 <= v <= 1, "allowed": "0..1 (0 = no SE)"})
    """Squeeze-excitation width as a fraction of the block's input width."""
    head_dim: int = field(default=32, metadata={"check": lambda v: v >= 8, "allowed": ">= 8"})
    """Attention head size; a stage of width D has D / head_dim heads."""
    ffn_expansion: float = field(default=4.0, metadata={"check": lambda v: 1 <= v <= 8, "allowed": "1..8"})
    """Hidden width of the transformer FFN relative to D."""
    rel_attn: RelAttn = "pre"
    """Relative position bias: added to logits before softmax (``pre``, the paper's Eq. 3), after it
    (``post``), or not at all (``none``)."""
    downsample: Downsample = "conv1x1"
    """Where the first MBConv block of a stage applies stride 2: on the first 1x1 conv (the paper, Eq. 5)
    or on the depthwise conv."""


@dataclass(frozen=True)
class Architecture:
    """A CoAtNet-style network: stem S0 plus four stages S1-S4.

    ``layout`` holds the block letter of S1..S4, each a key of :data:`BLOCKS` (``"C"`` MBConv or ``"T"``
    relative-attention transformer).
    ``depths`` and ``widths`` hold L and D for S0..S4 (five entries each; S0 is the stem).

    ``stem="patch"`` makes the ViT_REL baseline: a ``patch_size`` x ``patch_size`` patchify conv replaces
    S0's two 3x3 convs, every stage is a transformer and no stage downsamples.

    ``stem_stride`` is the stride of the conv stem's first conv: 2 (the paper, 32x downsampling in all) or
    1 (16x in all), which keeps S3/S4 at 4x4/2x2 tokens instead of 2x2/1x1 for 32 px inputs, as CIFAR
    adaptations of ResNets and ViTs do. It is part of the canonical string (``stem_stride=1``) when not 2.

    ``strides`` is the stride of each stage S1..S4's first block: 2 (the paper: every stage halves the map) or
    1 (the stage keeps its input's map). ``strides=2,2,1,2`` keeps a 32 px input's S3 at 4x4 tokens at a
    fraction of a stride-1 stem's cost (docs/space.md). It is part of the canonical string when not all 2;
    ViT_REL's stages never downsample and keep the default.
    """

    layout: tuple[str, str, str, str]
    depths: tuple[int, int, int, int, int]
    widths: tuple[int, int, int, int, int]
    options: BlockOptions = BlockOptions()
    stem: Literal["conv", "patch"] = "conv"
    patch_size: int = 16
    stem_stride: int = 2
    strides: tuple[int, int, int, int] = DEFAULT_STRIDES

    def __post_init__(self) -> None:
        # Normalise lists to tuples so equal architectures hash equally.
        for name in ("layout", "depths", "widths", "strides"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if len(self.layout) != 4 or not all(map(is_block_letter, self.layout)):
            raise ValueError(f"layout must be 4 block letters, each one of {known_blocks()}; got {self.layout}")
        if len(self.depths) != 5 or len(self.widths) != 5:
            raise ValueError("depths and widths need 5 entries (S0..S4)")
        if any(int(d) < 1 for d in self.depths) or any(int(w) < 1 for w in self.widths):
            raise ValueError(f"depths and widths must be positive, got {self.depths} {self.widths}")
        if self.stem == "patch" and self.layout != (VIT_BLOCK,) * 4:
            raise ValueError(f"the patch stem (ViT_REL) needs every stage to be {VIT_BLOCK}")
        if self.stem not in ("conv", "patch"):
            raise ValueError(f"stem must be 'conv' or 'patch', got {self.stem!r}")
        if (
            type(self.stem_stride) is not int
            or self.stem_stride not in (1, 2)
            or (self.stem == "patch" and self.stem_stride != 2)
        ):
            raise ValueError(f"stem_stride must be 1 or 2 (and 2 for the patch stem), got {self.stem_stride!r}")
        if (
            len(self.strides) != 4
            or any(type(v) is not int or v not in (1, 2) for v in self.strides)
            or (self.stem == "patch" and self.strides != DEFAULT_STRIDES)
        ):
            raise ValueError(f"strides must be 4 of 1 or 2 (S1..S4; all 2 for the patch stem), got {self.strides!r}")

    # ----------------------------------------------------------------- naming
    @property
    def is_vit(self) -> bool:
        return self.stem == "patch"

    @property
    def layout_name(self) -> str:
        """``C-C-T-T``, or ``ViT_REL`` for the patch-stem baseline."""
        return VIT_REL if self.is_vit else "-".join(self.layout)

    def __str__(self) -> str:
        text = f"{self.layout_name} L={','.join(map(str, self.depths))} D={','.join(map(str, self.widths))}"
        extras = [f"{k}={v}" for k, v in self._non_default_options().items()]
        return " ".join([text, *extras])

    def _non_default_options(self) -> dict[str, Any]:
        out = {
            f.name: getattr(self.options, f.name)
            for f in dataclasses.fields(BlockOptions)
            if getattr(self.options, f.name) != f.default
        }
        if self.is_vit:
            out["patch"] = self.patch_size
        if self.stem_stride != 2:
            out["stem_stride"] = self.stem_stride
        if self.strides != DEFAULT_STRIDES:
            out["strides"] = ",".join(map(str, self.strides))
        return out

    @property
    def id(self) -> str:
        """Stable 12-hex-digit id: a hash of the canonical string."""
        return hashlib.sha1(str(self).encode()).hexdigest()[:12]

    # ------------------------------------------------------------- round trip
    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (YAML/JSON friendly); :meth:`from_dict` inverts it."""
        out: dict[str, Any] = {
            "layout": self.layout_name,
            "depths": list(self.depths),
            "widths": list(self.widths),
            "options": dataclasses.asdict(self.options),
        }
        if self.is_vit:
            out["patch_size"] = self.patch_size
        if self.stem_stride != 2:
            out["stem_stride"] = self.stem_stride
        if self.strides != DEFAULT_STRIDES:
            out["strides"] = list(self.strides)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], file: str | None = None, path: str = "architecture") -> Architecture:
        """Inverse of :meth:`to_dict`; raises :class:`ConfigError` naming the bad key."""
        if not isinstance(data, Mapping):
            raise ConfigError(file, path, "must be a mapping", "keys layout, depths, widths, options", value=data)
        check_keys(data, ("depths", "layout", "options", "patch_size", "stem_stride", "strides", "widths"), file, path)
        for key in ("layout", "depths", "widths"):
            if key not in data:
                raise ConfigError(file, f"{path}.{key}", "is missing", "see `nas-export` output for an example")
        layout = data["layout"]
        stem = "conv"
        if layout == VIT_REL:
            stem, layout = "patch", (VIT_BLOCK,) * 4
        elif isinstance(layout, str):
            layout = tuple(layout.split("-"))
        if not isinstance(layout, (list, tuple)):
            layout = ()  # not a sequence of letters: reported as not a layout of four stages
        layout = check_layout(layout, file, f"{path}.layout", data["layout"])
        seqs = {}
        for key in ("depths", "widths"):
            seq = data[key]
            if (
                not isinstance(seq, (list, tuple))
                or len(seq) != 5
                or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in seq)
            ):
                raise ConfigError(
                    file, f"{path}.{key}", "must list 5 positive integers (S0..S4)", "e.g. [2, 2, 3, 5, 2]", value=seq
                )
            seqs[key] = tuple(seq)
        options = parse_dataclass(BlockOptions, data.get("options") or {}, file, f"{path}.options")
        patch = data.get("patch_size", 16)
        if isinstance(patch, bool) or not isinstance(patch, int) or patch < 1:
            raise ConfigError(file, f"{path}.patch_size", "must be a positive integer", value=patch)
        stride = data.get("stem_stride", 2)
        if type(stride) is not int or stride not in (1, 2) or (stem == "patch" and stride != 2):
            raise ConfigError(file, f"{path}.stem_stride", "must be 1 or 2 (2 for ViT_REL)", "1, 2", value=stride)
        strides = data.get("strides", list(DEFAULT_STRIDES))
        if (
            not isinstance(strides, (list, tuple))
            or len(strides) != 4
            or any(type(v) is not int or v not in (1, 2) for v in strides)
            or (stem == "patch" and tuple(strides) != DEFAULT_STRIDES)
        ):
            raise ConfigError(
                file,
                f"{path}.strides",
                "must list the stride of S1..S4, each 1 or 2 (all 2 for ViT_REL)",
                "e.g. [2, 2, 1, 2]",
                value=strides,
            )
        return cls(
            layout=tuple(layout),
            depths=seqs["depths"],
            widths=seqs["widths"],
            options=options,
            stem=stem,
            patch_size=patch,
            stem_stride=stride,
            strides=tuple(strides),
        )

    @classmethod
    def parse(cls, text: str, options: BlockOptions | None = None) -> Architecture:
        """Parse the short string form, e.g. ``"C-C-T-T L=2,2,3,5,2 D=64,96,192,384,768"``.

        Trailing ``key=value`` pairs set block options (and ``patch`` for ViT_REL, ``stem_stride``, ``strides``).
        """
        parts = text.split()
        if len(parts) < 3 or not parts[1].startswith("L=") or not parts[2].startswith("D="):
            raise ValueError(f"expected 'LAYOUT L=..,.. D=..,..', got {text!r}")

        def ints(val: str, key: str) -> list[int]:
            # digits only: int() would also take "+2", "1_0", " 2" and other scripts' digits
            if not all(v.isascii() and v.isdigit() for v in val.split(",")):
                raise ValueError(f"{key}= takes whole numbers separated by commas, got {val!r} in {text!r}")
            return [int(v) for v in val.split(",")]

        def one(val: str, key: str) -> int:
            if not (val.isascii() and val.isdigit()):
                raise ValueError(f"{key}= takes one whole number, got {val!r} in {text!r}")
            return int(val)

        data: dict[str, Any] = {
            "layout": parts[0],
            "depths": ints(parts[1][2:], "L"),
            "widths": ints(parts[2][2:], "D"),
            "options": dataclasses.asdict(options or BlockOptions()),
        }
        hints = {f.name: f.type for f in dataclasses.fields(BlockOptions)}
        seen: set[str] = set()
        for extra in parts[3:]:
            key, _, val = extra.partition("=")
            if key in seen:
                raise ValueError(f"{key}= is given twice in {text!r}")
            seen.add(key)
            if key == "patch":
                if parts[0] != "ViT_REL":
                    raise ValueError(f"patch= is for ViT_REL only (a conv stem has no patch), got {text!r}")
                data["patch_size"] = one(val, key)
            elif key == "stem_stride":
                data["stem_stride"] = one(val, key)
            elif key == "strides":
                data["strides"] = ints(val, key)
            elif key in hints:
                default = getattr(BlockOptions(), key)
                data["options"][key] = type(default)(val) if not isinstance(default, str) else val
            else:
                raise ValueError(f"unknown option {key!r} in {text!r}")
        return cls.from_dict(data)


RESIZE_POLICY = "shorter-side-center-crop"
"""The one resize policy (docs/model.md, "Preprocessing"): an image is scaled, keeping its aspect ratio, so that
its shorter side is the model's image size (bilinear, antialiased when shrinking), then its centre square is
kept. A square image of the model's size is left as it is. Training, evaluation, prediction and the timm export
(crop 1.0, ``crop_mode: center``) all apply it."""
INTERPOLATIONS = ("bilinear",)
MAX_CLASS_NAME = 200


@dataclass(frozen=True)
class Preprocessing:
    """What turns an image into the network's input: :data:`RESIZE_POLICY` to the model's image size, pixel
    values scaled to [0, 1], then ``(x - mean) / std`` per channel. ``mean`` and ``std`` are those of the
    training split the weights were trained on (one value per input channel)."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    resize: str = RESIZE_POLICY
    interpolation: str = "bilinear"

    def to_dict(self) -> dict[str, Any]:
        return {
            "mean": [float(v) for v in self.mean],
            "std": [float(v) for v in self.std],
            "resize": self.resize,
            "interpolation": self.interpolation,
        }

    @classmethod
    def from_dict(cls, data: Any, in_chans: int, file: str | None = None, key: str = "preprocessing") -> Preprocessing:
        import math

        keys = "mean, std, resize, interpolation"
        if not isinstance(data, Mapping):
            raise ConfigError(file, key, "must be a mapping", f"keys {keys}", value=data)
        check_keys(data, ("mean", "std", "resize", "interpolation"), file, key)
        values = {}
        for name in ("mean", "std"):
            v = data.get(name)
            ok = (
                isinstance(v, Sequence)
                and not isinstance(v, str)
                and len(v) == in_chans
                and all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in v)
            )
            if ok and name == "std":
                ok = all(1e-6 <= x <= 1e3 for x in v)
            if ok and name == "mean":
                ok = all(-1e3 <= x <= 1e3 for x in v)
            if not ok:
                what = "numbers from 1e-6 to 1000" if name == "std" else "numbers from -1000 to 1000"
                raise ConfigError(
                    file,
                    f"{key}.{name}",
                    f"must be a list of {in_chans} {what} (one per input channel, `in_chans`)",
                    f"{in_chans} {what} in [0, 1] pixel units (the training split's per-channel statistics)",
                    value=v,
                )
            values[name] = tuple(float(x) for x in v)
        resize = data.get("resize", RESIZE_POLICY)
        if resize != RESIZE_POLICY:
            raise ConfigError(
                file, f"{key}.resize", "is not a resize policy coatnas applies", RESIZE_POLICY, value=resize
            )
        interp = data.get("interpolation", "bilinear")
        if interp not in INTERPOLATIONS:
            raise ConfigError(file, f"{key}.interpolation", "is unknown", ", ".join(INTERPOLATIONS), value=interp)
        return cls(values["mean"], values["std"], resize, interp)


def _class_names(data: Any, num_classes: int, file: str | None) -> tuple[str, ...] | None:
    if data is None:
        return None
    allowed = f"a list of {num_classes} distinct, non-empty names (one per class, `num_classes`)"
    if isinstance(data, str) or not isinstance(data, Sequence):
        raise ConfigError(file, "class_names", "must be a list", allowed, value=data)
    if len(data) != num_classes:
        raise ConfigError(file, "class_names", f"has {len(data)} names for {num_classes} classes", allowed)
    for i, name in enumerate(data):
        if not isinstance(name, str) or not name.strip() or len(name) > MAX_CLASS_NAME or not name.isprintable():
            raise ConfigError(
                file,
                f"class_names[{i}]",
                f"must be printable text of 1 to {MAX_CLASS_NAME} characters",
                allowed,
                value=name,
            )
    if len(set(data)) != len(data):
        dup = next(n for n in data if list(data).count(n) > 1)
        raise ConfigError(file, "class_names", f"names {dup!r} twice", allowed)
    return tuple(data)


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a network and feed it: the architecture, its input and its classifier size,
    and, for a trained network, its :class:`Preprocessing` and the names of its classes.

    ``provenance`` records where it came from (run, trial, metrics); it does not affect the network.
    ``nas.export.model_config`` reads and writes it as YAML; ``nas.build_model`` accepts it directly.
    """

    arch: Architecture
    num_classes: int
    image_size: int
    in_chans: int = 3
    provenance: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)
    preprocessing: Preprocessing | None = None
    """``None`` for a config not trained yet (an export from a search run): ``nas-train`` fills it in."""
    class_names: tuple[str, ...] | None = None
    """``None`` where the data gave none; then classes are called by their index."""

    def labels(self) -> tuple[str, ...]:
        """The name of each class: :attr:`class_names`, else the class index as text."""
        return self.class_names or tuple(str(i) for i in range(self.num_classes))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "architecture": self.arch.to_dict(),
            "image_size": self.image_size,
            "num_classes": self.num_classes,
            "in_chans": self.in_chans,
        }
        if self.preprocessing is not None:
            out["preprocessing"] = self.preprocessing.to_dict()
        if self.class_names is not None:
            out["class_names"] = list(self.class_names)
        out["provenance"] = dict(self.provenance)
        return out

    @classmethod
    def from_dict(cls, data: Any, file: str | None = None) -> ModelConfig:
        keys = ("architecture", "image_size", "num_classes", "in_chans", "preprocessing", "class_names", "provenance")
        if not isinstance(data, Mapping):
            raise ConfigError(file, "<top level>", "must be a mapping", "keys " + ", ".join(keys), value=data)
        check_keys(data, keys, file, "")
        if "architecture" not in data:
            raise ConfigError(file, "architecture", "is missing", "a mapping with layout, depths, widths")
        arch = Architecture.from_dict(data["architecture"], file, "architecture")
        ints = {}
        for key, default, low in (("image_size", None, 8), ("num_classes", None, 1), ("in_chans", 3, 1)):
            value = data.get(key, default)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(file, key, "must be an integer" + (f" >= {low}"), f"an integer >= {low}", value=value)
            ints[key] = value
        provenance = data.get("provenance") or {}
        if not isinstance(provenance, Mapping):
            raise ConfigError(file, "provenance", "must be a mapping", value=provenance)
        pre = data.get("preprocessing")
        pre = None if pre is None else Preprocessing.from_dict(pre, ints["in_chans"], file)
        names = _class_names(data.get("class_names"), ints["num_classes"], file)
        return cls(arch=arch, provenance=dict(provenance), preprocessing=pre, class_names=names, **ints)
