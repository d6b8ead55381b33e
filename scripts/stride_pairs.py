"""Cross-arm view of the paired stem-stride study (docs/fidelity.md, issue 9): pairs the architectures of two
study directories (the same networks at stem stride 2 and 1) and prints, from each study's own
``fidelity.json`` (``nas-fidelity --report-only`` writes it), how the reference at one stride ranks the
architectures against the reference (and the proxy) at the other, with the statistics of ``nas.fidelity``.

    python scripts/stride_pairs.py runs/stride2-cifar runs/stride1-cifar
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from nas.fidelity import agreement


def _rows(study_dir: str) -> dict[str, dict]:
    res = json.loads((Path(study_dir) / "fidelity.json").read_text())
    return {r["arch"].replace(" stem_stride=1", ""): r for r in res["rows"]}


def _fmt(a: dict, key: str) -> str:
    lo, hi = a[f"{key}_ci"]
    return f"{a[key]:.2f} [{lo:.2f}, {hi:.2f}]"


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("a", help="study directory of one arm (e.g. runs/stride2-cifar)")
    p.add_argument("b", help="study directory of the other arm (e.g. runs/stride1-cifar)")
    p.add_argument("--proxy", default="default", help="proxy name in both studies (default: default)")
    p.add_argument(
        "--without",
        action="append",
        default=[],
        metavar="LAYOUT",
        help="leave out a layout (e.g. ViT_REL, the same network in both arms); repeatable",
    )
    return p.parse_args(argv)


def _pairs(arms: list[tuple[str, dict]], both: list[str], proxy: str) -> list[tuple[str, str, list, list]]:
    """(x name, y name, x values, y values) of each comparison: within each arm, reference vs reference
    across arms, and each arm's proxy against the other arm's reference."""
    (na, ra), (nb, rb) = arms
    axes = ("score", "generalization", "capacity")

    def proxy_of(r: dict, ax: str) -> list:
        return [r[k]["proxies"][proxy][ax] for k in both]

    def ref_of(r: dict, ax: str) -> list:
        return [r[k]["ref"][ax] for k in both]

    pairs = [
        (f"{n} proxy {proxy} {ax}", f"{n} reference {ax}", proxy_of(r, ax), ref_of(r, ax))
        for n, r in arms
        for ax in axes
    ]
    pairs += [(f"{na} reference {ax}", f"{nb} reference {ax}", ref_of(ra, ax), ref_of(rb, ax)) for ax in axes]
    pairs += [
        (f"{na} proxy {proxy} score", f"{nb} reference score", proxy_of(ra, "score"), ref_of(rb, "score")),
        (f"{nb} proxy {proxy} score", f"{na} reference score", proxy_of(rb, "score"), ref_of(ra, "score")),
    ]
    return pairs


def _per_architecture(arms: list[tuple[str, dict]], both: list[str], proxy: str) -> None:
    """A row per architecture: each arm's proxy and reference score and seconds."""
    (na, ra), (nb, rb) = arms
    print(
        f"\n| architecture | {na} proxy score | {na} reference score | {nb} proxy score | {nb} reference score "
        f"| {na} proxy / reference s | {nb} proxy / reference s |"
    )
    print("|---|---|---|---|---|---|---|")
    for k in sorted(both, key=lambda k: -rb[k]["ref"]["score"]):
        x, y = ra[k], rb[k]
        print(
            f"| {k} | {x['proxies'][proxy]['score']:.4f} | {x['ref']['score']:.4f} | "
            f"{y['proxies'][proxy]['score']:.4f} | {y['ref']['score']:.4f} | "
            f"{x['proxies'][proxy]['wall_s']:.1f} / {x['ref_wall_s']:.1f} | "
            f"{y['proxies'][proxy]['wall_s']:.1f} / {y['ref_wall_s']:.1f} |"
        )


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    ra, rb = _rows(args.a), _rows(args.b)
    both = [k for k in ra if k in rb and ra[k]["arch"].split()[0] not in args.without]
    arms = [(Path(args.a).name, ra), (Path(args.b).name, rb)]
    left = f" (without {', '.join(args.without)})" if args.without else ""
    print(f"{len(both)} architectures with a reference result in both {arms[0][0]} and {arms[1][0]}{left}.\n")
    print("| x | y | n | Kendall tau [95% CI] | Spearman rho [95% CI] |")
    print("|---|---|---|---|---|")
    for x, y, vx, vy in _pairs(arms, both, args.proxy):
        a = agreement(vx, vy)
        print(f"| {x} | {y} | {a['n']} | {_fmt(a, 'tau')} | {_fmt(a, 'rho')} |")
    _per_architecture(arms, both, args.proxy)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
