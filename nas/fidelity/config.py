"""The study YAML of ``nas-fidelity``: which space, which proxy protocols, which reference, how many.

A study file names a search YAML (its ``space:``, ``train:`` and ``objective:`` are the base protocol) and
overrides of that protocol for each proxy and for the reference::

    study:
      space: coatnet-cifar.yaml     # a search YAML (path relative to this file, or a bundled name)
      architectures: 30             # sampled, stratified over the space's layouts; or `all` (small spaces)
      seed: 0
      zero_cost: [params, macs, synflow, naswot, grad_norm]
      max_concurrent: 2
      cpus_per_trial: 1
    proxies:                        # name -> overrides of the search YAML's train:/objective:
      default: {}
      running-bn: {train: {bn_recalibrate: 0}}
    reference:
      seeds: [0, 1]
      train: {epochs: 30}

Everything is validated here, once, with the parsers of the rooms below (the trainers' ``train:`` and
``objective:`` dataclasses); the runner sees only validated objects.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from nas.errors import ConfigError, UserError, check_keys, parse_dataclass, yaml_problem
from nas.limits import RANGES, allowed_text, check_ranges, check_value
from nas.model.arch import Architecture
from trainers.data.config import DataConfig

REFERENCE = "reference"
ZERO_COST_JOB = "zero_cost"  # the job that measures an architecture's zero-cost proxies (not a protocol)
RESERVED = (REFERENCE, ZERO_COST_JOB)  # names no proxy protocol may take (nor a spelling of them)


@dataclass(frozen=True)
class StudySettings:
    """The ``study:`` section.

    Args:
        space: the search YAML whose space is sampled and whose train/objective are the base protocol.
        architectures: how many to sample (stratified over layouts), ``all`` to take every candidate, or a
            list of named candidates (``"C-C-C-T L=2,1,1,2,1 D=16,32,64,96,128"``), trained in that order.
        seed: seed of the sample.
        zero_cost: training-free proxies computed for every architecture (``trainers.objectives.zerocost``).
        zero_cost_batch: images per zero-cost measurement.
        max_concurrent: trainings at once (``null``: as many as the CPUs/GPUs allow).
        cpus_per_trial: CPUs (= torch threads) of one training.
        gpus_per_trial: GPUs of one training (fractions pack several on one GPU).
        max_retries: re-runs of a training whose worker died.
        bootstrap: resamples of the architectures for the 95% intervals.
        ceiling_architectures: the reference's second and later seeds train only the first this many
            architectures (the sample of the noise ceiling, still stratified over layouts); ``null``: as
            many as the first seed.
        reference_architectures: the reference's first seed trains only the first this many architectures
            (stratified over layouts; a tabulated benchmark trains every candidate with the proxy and a
            sample with the reference); ``null``: all.
    """

    space: str = "coatnet-cifar.yaml"
    architectures: int | str | tuple[str, ...] = 30
    seed: int = 0
    zero_cost: tuple[str, ...] = ("params", "macs", "synflow", "naswot", "grad_norm")
    zero_cost_batch: int = 64
    max_concurrent: int | None = None
    cpus_per_trial: float = field(default=1.0, metadata={"check": lambda v: v > 0, "allowed": "a number > 0"})
    gpus_per_trial: float = 0.0
    max_retries: int = 2
    bootstrap: int = 1000
    ceiling_architectures: int | None = None
    reference_architectures: int | None = None
    # every number is checked against its range of nas.limits.RANGES ("study.<name>")


@dataclass(frozen=True)
class Protocol:
    """One way of training a candidate: a validated ``train:`` and ``objective:`` and the seeds it runs."""

    name: str
    train: Any  # trainers.training.proxy.TrainConfig
    objective: Any  # trainers.objectives.registry.ObjectiveConfig
    seeds: tuple[int, ...]


@dataclass(frozen=True)
class Study:
    """A validated study: settings, the search experiment it samples, proxies and the reference."""

    settings: StudySettings
    experiment: Any  # nas.search.config.Experiment
    proxies: tuple[Protocol, ...]
    reference: Protocol
    file: str | None = None
    raw: dict = field(default_factory=dict, compare=False)
    source: dict = field(default_factory=dict, compare=False)  # the study YAML as read (saved in study.json)

    @property
    def protocols(self) -> tuple[Protocol, ...]:
        return (*self.proxies, self.reference)

    def protocol(self, name: str) -> Protocol:
        return next(p for p in self.protocols if p.name == name)

    def fingerprint(self) -> str:
        """Hash of everything that changes results (the resolved study and search YAML)."""
        text = json.dumps(self.raw, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def _merge(base: Any, over: Any) -> Any:
    if isinstance(base, Mapping) and isinstance(over, Mapping):
        out = dict(base)
        for k, v in over.items():
            out[k] = _merge(base.get(k), v) if k in base else v
        return out
    return copy.deepcopy(over)


def _protocol(name: str, section: Any, exp, file: str | None, path: str, seeds: Any) -> Protocol:
    from trainers.data.sources import resolve_source
    from trainers.objectives.registry import ObjectiveConfig
    from trainers.training.config import TrainConfig

    section = check_keys(section or {}, ("train", "objective", "seeds"), file, path)
    base_train = exp.raw.get("train") or {}
    base_obj = exp.raw.get("objective") or {}
    train = parse_dataclass(TrainConfig, _merge(base_train, section.get("train") or {}), file, f"{path}.train")
    over = section.get("train") if isinstance(section.get("train"), Mapping) else {}
    if over.get("data"):  # a refusal names the study file and the protocol's key (the path is still read next
        named = {"named": file, "key": f"{path}.train.data.path"}  # to the search YAML, as before)
    else:
        named = {}
    train = dataclasses.replace(train, data=resolve_source(train.data, exp.file, **named))
    objective = parse_dataclass(
        ObjectiveConfig, _merge(base_obj, section.get("objective") or {}), file, f"{path}.objective"
    )
    _check_protocol_ranges(train, "train", file, path)
    _check_protocol_ranges(objective, "objective", file, path)
    seeds = _seeds(section.get("seeds", seeds), file, f"{path}.seeds")
    return Protocol(name=name, train=train, objective=objective, seeds=seeds)


def _check_protocol_ranges(section: Any, prefix: str, file: str | None, path: str) -> None:
    """The ranges of nas.limits for a protocol's ``train:``/``objective:``, named as in the study YAML."""
    try:
        check_ranges(section, prefix, file)
    except ConfigError as err:
        raise ConfigError(file, f"{path}.{err.key}", err.problem, err.allowed, err.value) from None


def _seeds(seeds: Any, file: str | None, key: str) -> tuple[int, ...]:
    """A protocol's seeds: a non-empty list of distinct integers of the seed range."""
    lo, hi = RANGES["study.seeds_per_protocol"]
    if not isinstance(seeds, (list, tuple)) or not seeds:
        raise ConfigError(file, key, "must be a non-empty list of seeds", "e.g. [0, 1]", value=seeds)
    if len(seeds) > hi:
        raise ConfigError(
            file, key, f"lists {len(seeds)} seeds", f"from {lo:g} to {hi:g} seeds per protocol", value=seeds
        )
    for i, s in enumerate(seeds):
        if isinstance(s, bool) or not isinstance(s, int):
            raise ConfigError(file, f"{key}[{i}]", "must be an integer seed", allowed_text("study.seeds"), value=s)
        check_value(s, "study.seeds", file, f"{key}[{i}]")
    return tuple(dict.fromkeys(seeds))


def study_from_dict(data: Any, file: str | None = None) -> Study:
    """Validate a parsed study YAML (top-level keys ``study``, ``proxies``, ``reference``)."""
    data = check_keys(data if data is not None else {}, ("study", "proxies", "reference"), file, "")
    settings, inline = _settings(data.get("study"), file)
    settings, exp, space_file = _experiment(settings, inline, file)
    if isinstance(settings.architectures, tuple):
        named_architectures(settings.architectures, exp.space, file)  # each a candidate of the space
    proxies = _proxies(data.get("proxies"), exp, file)
    reference = _protocol(REFERENCE, data.get("reference"), exp, file, "reference", [0, 1])
    plain = {
        k: v for k, v in dataclasses.asdict(settings).items() if not (k == "reference_architectures" and v is None)
    }  # fingerprints of earlier studies hold
    raw = {
        "study": {**plain, "space": str(Path(space_file).name)},
        "search_yaml": exp.raw,
        "proxies": {p.name: _plain(p) for p in proxies},
        "reference": _plain(reference),
    }
    return Study(
        settings=settings,
        experiment=exp,
        proxies=tuple(proxies),
        reference=reference,
        file=file,
        raw=json.loads(json.dumps(raw, default=str)),
        source=_plain_data(data),
    )


def _plain_data(data: Mapping) -> dict:
    """The study YAML as plain JSON data (what study.json saves); a value JSON cannot hold (a date, a
    YAML set) is refused here, at the start, not when the study is saved."""
    try:
        return json.loads(json.dumps(data, allow_nan=False))
    except (TypeError, ValueError) as err:
        raise ConfigError(
            None, "<top level>", f"holds a value a study cannot save ({err})", "numbers, strings, lists, mappings"
        ) from None


def _settings(section: Any, file: str | None) -> tuple[StudySettings, Mapping | None]:
    """The ``study:`` section as :class:`StudySettings`, and the search YAML inlined in it (a saved study)."""
    s = dict(check_keys(section or {}, [f.name for f in dataclasses.fields(StudySettings)], file, "study"))
    inline = _inline_space(s.pop("space"), file) if isinstance(s.get("space"), Mapping) else None
    archs = s.pop("architectures", StudySettings.architectures)
    zc = s.pop("zero_cost", list(StudySettings.zero_cost))
    settings = parse_dataclass(StudySettings, s, file, "study")
    check_ranges(settings, "study", file)
    if isinstance(archs, (list, tuple)):
        archs = _named_list(archs, file)
    elif archs != "all":
        if isinstance(archs, bool) or not isinstance(archs, int):
            raise ConfigError(
                file,
                "study.architectures",
                "must be a number of architectures, `all` or a list of architectures",
                f"an integer {allowed_text('study.architectures')}, all (every candidate of a small space), or "
                "a list such as ['C-C-C-T L=2,1,1,2,1 D=16,32,64,96,128']",
                value=archs,
            )
        check_value(archs, "study.architectures", file)
    from trainers.objectives.registry import ZERO_COST

    if zc is None:
        zc = []
    if not isinstance(zc, (list, tuple)) or any(not isinstance(z, str) or z not in ZERO_COST for z in zc):
        raise ConfigError(
            file,
            "study.zero_cost",
            "must be a list of zero-cost proxy names",
            f"any of {', '.join(ZERO_COST)} (or [] for none)",
            value=zc,
        )
    return dataclasses.replace(settings, architectures=archs, zero_cost=tuple(dict.fromkeys(zc))), inline


def _named_list(archs: list | tuple, file: str | None) -> tuple[str, ...]:
    """``study.architectures`` as a list: distinct strings, at least two, at most the study's maximum."""
    lo, hi = RANGES["study.architectures"]
    if not lo <= len(archs) <= hi:
        raise ConfigError(
            file, "study.architectures", f"lists {len(archs)} architectures", f"from {lo:g} to {hi:g}", value=archs
        )
    for i, a in enumerate(archs):
        if not isinstance(a, str):
            raise ConfigError(
                file,
                f"study.architectures[{i}]",
                "must be an architecture string",
                "LAYOUT L=depths D=widths, e.g. 'C-C-C-T L=2,1,1,2,1 D=16,32,64,96,128' (as the leaderboard prints it)",
                value=a,
            )
    return tuple(archs)


def named_architectures(names: tuple[str, ...], space: Any, file: str | None) -> list[Architecture]:
    """The candidates a list-form ``study.architectures`` names, parsed with the space's block options (a
    string's own ``key=value`` pairs override them), each checked to be a candidate, none twice."""
    base = space.minimal_architectures()[0].options
    out: list[Architecture] = []
    seen: dict[str, int] = {}
    for i, text in enumerate(names):
        key = f"study.architectures[{i}]"
        try:
            arch = Architecture.parse(text.strip(), options=base)
        except (ValueError, TypeError, ConfigError) as err:
            raise ConfigError(
                file,
                key,
                f"is not an architecture ({err})",
                "LAYOUT L=depths D=widths, as the leaderboard prints it",
                value=text,
            ) from None
        why = space.why_invalid(arch)
        if why is not None:
            raise ConfigError(
                file, key, f"is not a candidate of the study's space: {why}", "a candidate of study.space", value=text
            )
        if arch.id in seen:
            raise ConfigError(
                file,
                key,
                f"names the same architecture as study.architectures[{seen[arch.id]}]",
                "each once",
                value=text,
            )
        seen[arch.id] = i
        out.append(arch)
    return out


def _inline_space(space: Mapping, file: str | None) -> Mapping:
    """``study.space`` as a saved study holds it: ``{file: PATH, yaml: {the search YAML}}``."""
    check_keys(space, ("file", "yaml"), file, "study.space")
    if not isinstance(space.get("yaml"), Mapping) or not isinstance(space.get("file", ""), str):
        raise ConfigError(
            file,
            "study.space",
            "must name a search YAML (or, in a saved study, hold it as {file: PATH, yaml: {...}})",
            "a path such as coatnet-cifar.yaml",
            value=space,
        )
    return space


def _experiment(settings: StudySettings, inline: Mapping | None, file: str | None):
    """(settings, the search YAML's experiment, its path): the inlined one of a saved study, else the file
    ``study.space`` names (relative to the study file when it is there)."""
    if inline is not None:  # a saved study: the search YAML as it was, not as the file is now
        from nas.search.config import experiment_from_dict

        space_file = str(inline.get("file") or "space.yaml")
        exp = experiment_from_dict(dict(inline["yaml"]), space_file)
        settings = dataclasses.replace(settings, space=Path(space_file).name)
    else:
        from nas.search.config import load_experiment

        space_file = settings.space
        if file is not None and not Path(space_file).is_absolute() and (Path(file).parent / space_file).is_file():
            space_file = str(Path(file).parent / space_file)
        exp = load_experiment(space_file)
    return settings, exp, space_file


def _proxies(proxies_d: Any, exp, file: str | None) -> list[Protocol]:
    """The ``proxies:`` section (name -> overrides of the search YAML's protocol; default ``{default: {}}``)."""
    if proxies_d is None:
        proxies_d = {"default": {}}
    if not isinstance(proxies_d, Mapping) or not proxies_d:
        raise ConfigError(
            file,
            "proxies",
            "must be a mapping of proxy names to overrides",
            "e.g. {default: {}, short: {train: {steps: 50}}}",
            value=proxies_d,
        )
    lo, hi = RANGES["study.proxies"]
    if len(proxies_d) > hi:
        raise ConfigError(file, "proxies", f"lists {len(proxies_d)} proxy protocols", f"from {lo:g} to {hi:g} proxies")
    proxies = []
    for name, section in proxies_d.items():
        _check_proxy_name(name, file)
        proxies.append(_protocol(name, section, exp, file, f"proxies.{name}", [exp.train.seed]))
    return proxies


def _check_proxy_name(name: Any, file: str | None) -> None:
    """A proxy protocol's name: letters, digits, '-' and '_', and neither the reference's nor the zero-cost
    job's nor a zero-cost proxy's (whatever the case or separator), so that no name means two things."""
    from trainers.objectives.registry import ZERO_COST

    allowed = (
        "letters, digits, '-' and '_' (at most 64), other than "
        f"{', '.join(f'`{r}`' for r in RESERVED)} and the zero-cost proxies' names"
    )
    if not isinstance(name, str) or not name or len(name) > 64 or not name.replace("-", "").replace("_", "").isalnum():
        raise ConfigError(file, f"proxies.{name}", "is not a usable proxy name", allowed, value=name)
    plain = name.lower().replace("-", "_")
    if plain in RESERVED:
        what = "the reference protocol" if plain == REFERENCE else "the job that measures the zero-cost proxies"
        raise ConfigError(
            file,
            f"proxies.{name}",
            f"is the name of {what}, so this proxy would not be trained as a proxy",
            allowed + "; rename it (e.g. `short`)",
        )
    if plain in {z.lower() for z in ZERO_COST}:
        raise ConfigError(
            file,
            f"proxies.{name}",
            "is the name of a zero-cost proxy (`study.zero_cost`), which measures an untrained network; "
            "a trained proxy protocol needs a name of its own",
            allowed + "; rename it (e.g. `short`)",
        )


def _plain(p: Protocol) -> dict:
    from trainers.objectives.registry import ObjectiveConfig
    from trainers.training.config import TrainConfig

    train = dataclasses.asdict(p.train)
    objective = dataclasses.asdict(p.objective)
    # Keys added since studies were first saved are left out at their defaults, so the fingerprints of
    # earlier studies hold (a study directory made before them still resumes).
    if train["data"]["stream_above_mb"] == DataConfig.stream_above_mb:
        del train["data"]["stream_above_mb"]
    if train["bn_source"] == TrainConfig.bn_source:
        del train["bn_source"]
    if objective["val_eval_limit"] == ObjectiveConfig.val_eval_limit:
        del objective["val_eval_limit"]
    if train["supernet"] is None:
        del train["supernet"]
    return {"train": train, "objective": objective, "seeds": list(p.seeds)}


def bundled_studies() -> list[str]:
    """Names of the study YAML files shipped in ``search_spaces/studies``."""
    import importlib.resources

    root = importlib.resources.files("search_spaces") / "studies"
    return sorted(p.name for p in root.iterdir() if p.name.endswith((".yaml", ".yml"))) if root.is_dir() else []


def _resolve(path: str | Path) -> Path:
    import importlib.resources

    p = Path(path).expanduser()
    if p.is_file():
        return p
    root = importlib.resources.files("search_spaces") / "studies"
    for cand in (str(path), f"{path}.yaml"):
        if "/" not in cand and (root / cand).is_file():
            return Path(str(root / cand))
    if os.path.lexists(p) and not p.is_dir():  # a FIFO, a device, a socket or a dangling link: never read
        kind = "a dangling symbolic link" if p.is_symlink() and not p.exists() else "not a regular file"
        raise UserError(
            f"Study file {str(path)!r} is {kind} (a FIFO, a device or a socket is never read as a YAML). Pass "
            f"a study YAML file or a bundled study: {', '.join(bundled_studies()) or 'none'}."
        )
    what = "a folder, not a YAML file" if p.is_dir() else f"neither an existing file (relative to {Path.cwd()})"
    raise UserError(
        f"Study file {str(path)!r} is {what} nor a bundled study. Bundled studies: "
        f"{', '.join(bundled_studies()) or 'none'}; see docs/fidelity.md for the format."
    )


def load_study(path: str | Path) -> Study:
    """Read and validate a study YAML file (a path, or a study bundled in ``search_spaces/studies``)."""
    from nas.yamlio import load_yaml_file

    p = _resolve(path)
    try:
        data = load_yaml_file(p, "a YAML mapping with keys study, proxies, reference")
    except yaml.YAMLError as err:
        raise ConfigError(
            str(p),
            "<top level>",
            f"is not valid YAML {yaml_problem(err)}",
            "a YAML mapping with keys study, proxies, reference",
        ) from None
    except OSError as err:
        raise UserError(f"Cannot read the study file {p}: {err.strerror or err}. Pass a readable YAML file.") from None
    try:
        return study_from_dict(data, str(p))
    except ConfigError as err:
        if err.file is not None:
            raise
        raise ConfigError(str(p), err.key, err.problem, err.allowed, err.value) from None
