"""Cross-arm view of two studies of the same networks at two geometries (docs/fidelity.md): pairs the
architectures of two study directories (equal but for ``stem_stride=`` / ``strides=``) and prints, from each
study's own ``fidelity.json`` (``nas-fidelity --report-only`` writes it), how the reference of one arm ranks the
architectures against the reference (and the proxy) of the other, with the statistics of ``nas.fidelity``, and
the paired difference of their reference scores, overall and per layout (t intervals over architectures).

    python scripts/stride_pairs.py runs/stride2-cifar runs/stride1-cifar                 # stem stride (issue 9)
    python scripts/stride_pairs.py runs/measure-cifar runs/s3-cifar --proxy-a v500-fused250   # S3 (issue 20)
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from nas.fidelity import agreement
from nas.fsio import read_json
from nas.search.finalists import t_interval

GEOMETRY = ("stem_stride=", "strides=")


def _key(arch: str) -> str:
    """The architecture without its geometry: what pairs the two arms."""
    return " ".join(t for t in arch.split() if not t.startswith(GEOMETRY))


def _rows(study_dir: str) -> dict[str, dict]:
    res = read_json(
        Path(study_dir) / "fidelity.json",
        lambda d: {r["arch"]: r for r in d["rows"]},
        what="the study report",
        fix=f"Write it again with `nas-fidelity --resume {study_dir} --report-only`.",
    )
    return {_key(a): r for a, r in res.items()}


def _fmt(a: dict, key: str) -> str:
    lo, hi = a[f"{key}_ci"]
    return f"{a[key]:.2f} [{lo:.2f}, {hi:.2f}]"


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("a", help="study directory of one arm (e.g. runs/stride2-cifar)")
    p.add_argument("b", help="study directory of the other arm (e.g. runs/stride1-cifar)")
    p.add_argument("--proxy", default="default", help="proxy name in both studies (default: default)")
    p.add_argument("--proxy-a", help="the proxy's name in the first study, where it differs")
    p.add_argument("--proxy-b", help="the proxy's name in the second study, where it differs")
    p.add_argument(
        "--without",
        action="append",
        default=[],
        metavar="LAYOUT",
        help="leave out a layout (e.g. ViT_REL, the same network in both arms); repeatable",
    )
    return p.parse_args(argv)


def _pairs(arms: list[tuple[str, dict]], both: list[str], proxies: dict[str, str]) -> list[tuple[str, str, list, list]]:
    """(x name, y name, x values, y values) of each comparison: within each arm, reference vs reference
    across arms, and each arm's proxy against the other arm's reference."""
    (na, ra), (nb, rb) = arms
    axes = ("score", "generalization", "capacity")

    def proxy_of(n: str, r: dict, ax: str) -> list:
        return [r[k]["proxies"][proxies[n]][ax] for k in both]

    def ref_of(r: dict, ax: str) -> list:
        return [r[k]["ref"][ax] for k in both]

    pairs = [
        (f"{n} proxy {proxies[n]} {ax}", f"{n} reference {ax}", proxy_of(n, r, ax), ref_of(r, ax))
        for n, r in arms
        for ax in axes
    ]
    pairs += [(f"{na} reference {ax}", f"{nb} reference {ax}", ref_of(ra, ax), ref_of(rb, ax)) for ax in axes]
    pairs += [
        (f"{na} proxy {proxies[na]} score", f"{nb} reference score", proxy_of(na, ra, "score"), ref_of(rb, "score")),
        (f"{nb} proxy {proxies[nb]} score", f"{na} reference score", proxy_of(nb, rb, "score"), ref_of(ra, "score")),
    ]
    return pairs


def _differences(arms: list[tuple[str, dict]], both: list[str]) -> None:
    """The second arm's reference score minus the first's, paired by architecture: over all, and per layout."""
    (na, ra), (nb, rb) = arms
    diff = {k: rb[k]["ref"]["score"] - ra[k]["ref"]["score"] for k in both}
    groups = {"all": list(both)}
    for k in both:
        groups.setdefault(ra[k]["layout"], []).append(k)
    print(f"\n| {nb} - {na}, reference score | n | mean (pp) | 95% t interval (pp) | higher | equal |")
    print("|---|---|---|---|---|---|")
    for name, keys in groups.items():
        v = [diff[k] for k in keys]
        ci = t_interval(v)
        span = f"[{100 * ci[0]:+.2f}, {100 * ci[1]:+.2f}]" if ci else "-"
        higher, equal = sum(x > 0 for x in v), sum(x == 0 for x in v)
        print(f"| {name} | {len(v)} | {100 * statistics.fmean(v):+.2f} | {span} | {higher} | {equal} |")


def _per_architecture(arms: list[tuple[str, dict]], both: list[str], proxies: dict[str, str]) -> None:
    """A row per architecture: each arm's proxy and reference score and seconds."""
    (na, ra), (nb, rb) = arms
    pa, pb = proxies[na], proxies[nb]
    print(
        f"\n| architecture | {na} proxy score | {na} reference score | {nb} proxy score | {nb} reference score "
        f"| {na} proxy / reference s | {nb} proxy / reference s |"
    )
    print("|---|---|---|---|---|---|---|")
    for k in sorted(both, key=lambda k: -rb[k]["ref"]["score"]):
        x, y = ra[k], rb[k]
        print(
            f"| {k} | {x['proxies'][pa]['score']:.4f} | {x['ref']['score']:.4f} | "
            f"{y['proxies'][pb]['score']:.4f} | {y['ref']['score']:.4f} | "
            f"{x['proxies'][pa]['wall_s']:.1f} / {x['ref_wall_s']:.1f} | "
            f"{y['proxies'][pb]['wall_s']:.1f} / {y['ref_wall_s']:.1f} |"
        )


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    ra, rb = _rows(args.a), _rows(args.b)
    both = [k for k in ra if k in rb and ra[k]["arch"].split()[0] not in args.without]
    arms = [(Path(args.a).name, ra), (Path(args.b).name, rb)]
    proxies = {arms[0][0]: args.proxy_a or args.proxy, arms[1][0]: args.proxy_b or args.proxy}
    left = f" (without {', '.join(args.without)})" if args.without else ""
    print(f"{len(both)} architectures with a reference result in both {arms[0][0]} and {arms[1][0]}{left}.\n")
    print("| x | y | n | Kendall tau [95% CI] | Spearman rho [95% CI] |")
    print("|---|---|---|---|---|")
    for x, y, vx, vy in _pairs(arms, both, proxies):
        a = agreement(vx, vy)
        print(f"| {x} | {y} | {a['n']} | {_fmt(a, 'tau')} | {_fmt(a, 'rho')} |")
    _differences(arms, both)
    _per_architecture(arms, both, proxies)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
