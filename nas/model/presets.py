"""The paper's CoAtNet-0..4 as architectures (S1-S2 MBConv, S3-S4 transformer), by name."""

from __future__ import annotations

from nas.errors import UserError
from nas.model.arch import Architecture

PRESETS: dict[str, Architecture] = {
    name: Architecture.parse(text)
    for name, text in {
        "coatnet-0": "C-C-T-T L=2,2,3,5,2 D=64,96,192,384,768",
        "coatnet-1": "C-C-T-T L=2,2,6,14,2 D=64,96,192,384,768",
        "coatnet-2": "C-C-T-T L=2,2,6,14,2 D=128,128,256,512,1024",
        "coatnet-3": "C-C-T-T L=2,2,6,14,2 D=192,192,384,768,1536",
        "coatnet-4": "C-C-T-T L=2,2,12,28,2 D=192,192,384,768,1536",
    }.items()
}


def names() -> list[str]:
    return list(PRESETS)


def get(name: str) -> Architecture:
    """The preset called ``name`` (case-insensitive, ``coatnet_0`` works too)."""
    key = name.lower().replace("_", "-")
    if key not in PRESETS:
        raise UserError(f"unknown preset {name!r}. Known presets: {', '.join(PRESETS)}.")
    return PRESETS[key]
