"""The ``search:`` section of a search YAML, and the whole experiment (space, train, objective, search).

:func:`load_experiment` validates every section once, with the parsers of the rooms below, and checks the
budgets against the cost model, so the search engine only ever sees validated objects.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from nas.errors import ConfigError, UserError, parse_dataclass
from nas.limits import MAX_GRID, check_ranges
from nas.registry import Registry
from nas.search.prescreen import PrescreenConfig
from nas.search.table import check_finalists_data, check_protocol, check_replayable, check_space, read_table
from trainers.objectives.registry import ZERO_COST
from trainers.training.config import default_protocol, flat
from trainers.training.tabular import TABLE_PREFIX, is_table, table_path

# search.sampler -> factory(seed, startup_trials) -> an Optuna sampler; ``grid`` queues every candidate first,
# then samples at random. Imported (with Optuna) only when a search makes its sampler.
SAMPLERS = Registry(
    "search.sampler",
    {
        "tpe": "nas.search.optuna_bridge:tpe_sampler",
        "nsga2": "nas.search.optuna_bridge:nsga2_sampler",
        "gp": "nas.search.optuna_bridge:gp_sampler",
        "random": "nas.search.optuna_bridge:random_sampler",
        "grid": "nas.search.optuna_bridge:random_sampler",
    },
)
# search.scheduler.type -> factory(SchedulerConfig, reports per trial, objectives) -> a Ray Tune scheduler or
# None (``none``: every trial to the end). Imported (with Ray) only when a search makes its scheduler.
SCHEDULERS = Registry(
    "search.scheduler.type",
    {
        "none": "nas.search.schedulers:no_scheduler",
        "asha": "nas.search.schedulers:asha_scheduler",
        "pareto": "nas.search.schedulers:pareto_scheduler",
    },
)


@dataclass(frozen=True)
class SchedulerConfig:
    """Early stopping of weak trials between rounds (the ``search.scheduler`` section; ``nas.search.schedulers``).

    Args:
        type: ``asha`` (successive halving on the per-round ``score``), ``pareto`` (successive halving on
            the non-dominated rank of (generalization, capacity)), or ``none``: every trial to the end.
        grace_period: epochs (reports) every trial runs before it may be stopped.
        reduction_factor: share 1/reduction_factor of trials is promoted at each rung.
        max_t: the most reports of a trial (``null``: the trainer's own count).
    """

    type: Literal[SCHEDULERS.names] = "none"
    grace_period: int = field(default=1, metadata={"check": lambda v: v >= 1, "allowed": "an integer >= 1"})
    reduction_factor: float = field(default=3.0, metadata={"check": lambda v: v > 1, "allowed": "a number > 1"})
    max_t: int | None = field(
        default=None, metadata={"check": lambda v: v is None or v >= 1, "allowed": "an integer >= 1 or null"}
    )


@dataclass(frozen=True)
class SearchConfig:
    """How the search runs (the ``search:`` section); command-line flags override it.

    Args:
        trials: candidates to train (completed trials; skipped or duplicate proposals do not count).
        sampler: ``tpe`` (default), ``nsga2``, ``gp`` (Gaussian process), ``random`` or ``grid`` (every
            candidate once, small spaces).
        seed: seed of the sampler.
        max_concurrent: trials running at once (``null``: as many as the CPUs/GPUs allow).
        ordered: the same seed, the same search: proposal ``m`` waits for trial ``m - max_concurrent`` and sees
            only the results up to it, so that a seed and ``max_concurrent`` fix the candidates, their order and
            the pick, whatever the timing and across a resume (``nas.search.proposals``). ``false``: each
            proposal uses whatever has finished (no waiting; the run then depends on timing).
        cpus_per_trial: CPUs of one trial; the trainer uses exactly this many torch threads.
        gpus_per_trial: GPUs of one trial; fractions such as 0.25 pack several trials on one GPU.
        max_retries: times a trial whose worker died (a lost node, a killed process) is retried.
        max_skips: proposals in a row that may be skipped (over budget or already trained) before the
            space counts as exhausted.
        startup_trials: random trials before TPE/NSGA-II model the results.
        scheduler: optional ASHA early stopping.
        prescreen: optional zero-cost pre-screen: the best of many sampled candidates by a training-free
            proxy become the first trials (``nas.search.prescreen``).
        time_budget: wall-clock time of one session (``2h``, ``45m``, ``90s``, ``1h30m``; :func:`parse_duration`),
            counted from its start; when spent the search stops as Ctrl-C stops it (resumable). Every session,
            a resumed one too, gets the whole budget; ``nas-search --time-budget`` replaces it for one session.
        trainer: the proxy trainer, ``module:function`` with ``trainers.training.proxy.train_candidate``'s signature
            and result (plug in your own proxy; it must be importable on every worker), or
            ``table:PATH``: replay the recorded trainings of a tabulated benchmark (``trainers.training.tabular``;
            PATH relative to the YAML, or bundled such as ``table:benchmarks/bench-cifar-v1.json``).
    """

    trials: int = field(default=8, metadata={"check": lambda v: v >= 1, "allowed": "an integer >= 1"})
    sampler: Literal[SAMPLERS.names] = "tpe"
    seed: int = 0
    max_concurrent: int | None = field(
        default=None, metadata={"check": lambda v: v is None or v >= 1, "allowed": "an integer >= 1 or null"}
    )
    ordered: bool = True
    cpus_per_trial: float = field(default=1.0, metadata={"check": lambda v: v > 0, "allowed": "a number > 0"})
    gpus_per_trial: float = field(default=0.0, metadata={"check": lambda v: v >= 0, "allowed": "a number >= 0"})
    max_retries: int = field(default=2, metadata={"check": lambda v: v >= 0, "allowed": "an integer >= 0"})
    max_skips: int = field(default=200, metadata={"check": lambda v: v >= 1, "allowed": "an integer >= 1"})
    startup_trials: int = field(default=4, metadata={"check": lambda v: v >= 1, "allowed": "an integer >= 1"})
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    prescreen: PrescreenConfig = field(default_factory=PrescreenConfig)
    time_budget: str | float | None = None
    trainer: str = field(
        default="trainers.proxy:train_candidate",
        metadata={
            "check": lambda v: (
                bool(re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", v)) or (is_table(v) and bool(table_path(v).strip()))
            ),
            "allowed": "an importable `module:function`, e.g. trainers.proxy:train_candidate, or table:PATH (a "
            "tabulated benchmark, e.g. table:benchmarks/bench-cifar-v1.json)",
        },
    )


FINALIST_SEEDS_MAX = 20  # trainings per finalist
FINALISTS_MAX = 50  # finalists verified at most


@dataclass(frozen=True)
class FinalistsConfig:
    """The verification stage (the optional ``finalists:`` section; ``nas.search.finalists``): once the search's
    trials are done, the top candidates are trained again under a longer protocol with several seeds, and the
    leaderboard ranks them by their mean over seeds.

    Args:
        top_k: the top K ``ok`` candidates by proxy score.
        pareto: also the Pareto front of the objective axes.
        max: at most this many finalists (in proxy rank order).
        seeds: trainings per finalist, with training seeds ``train.seed + 1 .. train.seed + seeds`` of the
            verification protocol (never the search's own draw).
        train: overrides of the search's ``train:`` (``{steps: 28}``), validated as ``train:`` is.
        objective: overrides of the search's ``objective:``.
    """

    top_k: int = field(default=3, metadata={"check": lambda v: 0 <= v <= FINALISTS_MAX, "allowed": "0 to 50"})
    pareto: bool = True
    max: int = field(default=6, metadata={"check": lambda v: 1 <= v <= FINALISTS_MAX, "allowed": "1 to 50"})
    seeds: int = field(
        default=3, metadata={"check": lambda v: 1 <= v <= FINALIST_SEEDS_MAX, "allowed": "an integer from 1 to 20"}
    )
    train: Any = None  # the verification protocol's TrainConfig (the search's with the overrides)
    objective: Any = None  # its ObjectiveConfig
    trainer: str = "trainers.proxy:train_candidate"  # the search's trainer; the default one for a table replay
    overrides: dict = field(default_factory=dict, compare=False)  # {"train": {...}, "objective": {...}} as given

    def seed_of(self, index: int) -> int:
        """The training seed of a finalist's ``index``-th training (0-based)."""
        return int(self.train.seed) + 1 + index


@dataclass(frozen=True)
class Experiment:
    """A validated search YAML: the space, the training protocol, the objective and the search settings."""

    space: Any  # nas.space.search_space.SearchSpace
    train: Any  # trainers.training.proxy.TrainConfig
    objective: Any  # trainers.objectives.registry.ObjectiveConfig
    search: SearchConfig
    file: str | None = None
    raw: dict = field(default_factory=dict, compare=False)
    classes: int | None = None  # known without loading the data (a tabulated benchmark records it)
    finalists: FinalistsConfig | None = None  # the optional verification stage

    def with_search(self, **overrides: Any) -> Experiment:
        """A copy with ``search`` fields replaced (``None`` values are ignored), validated like the YAML."""
        over = {k: v for k, v in overrides.items() if v is not None}
        if not over:
            return self
        data = {**_plain(self.search), **over}
        search = parse_dataclass(SearchConfig, data, None, "search")
        _check_time_budget(search, None)
        check_ranges(search, "search", None)
        _check_grid(search, self.space, None)
        return dataclasses.replace(self, search=search)

    @property
    def num_classes(self) -> int:
        return self.classes if self.classes is not None else num_classes_hint(self.train)


def _plain(obj: Any) -> dict:
    return dataclasses.asdict(obj)


def experiment_from_dict(data: dict, file: str | None = None, *, stored: bool = False) -> Experiment:
    """Validate a parsed search YAML (top-level keys space, train, objective, search). ``stored``: it is a run
    directory's own copy (``space.yaml``), accepted when the run started; the checks of a start (the finalists'
    seeds and data against a table) are not made again, so a finished run stays readable (export, report)."""
    from nas.model.cost import count_cost
    from nas.space.search_space import SearchSpace
    from trainers.training.config import parse_objective, parse_train

    space = SearchSpace.from_dict(data.get("space"), file=file)
    train = parse_train(data.get("train"), file)
    objective = parse_objective(data.get("objective"), file)
    search = parse_dataclass(SearchConfig, data.get("search"), file, "search")
    _check_time_budget(search, file)
    for section, prefix in ((train, "train"), (objective, "objective"), (search, "search")):
        check_ranges(section, prefix, file)
    _check_grid(search, space, file)
    _check_prescreen(search, file)
    exp = Experiment(space=space, train=train, objective=objective, search=search, file=file, raw=dict(data))
    if is_table(search.trainer):  # replayed: the data is not needed, the table knows its classes
        exp = _on_table(exp)
    else:
        from trainers.data.sources import resolve_source

        _check_trainer(search.trainer, file)
        exp = dataclasses.replace(exp, train=dataclasses.replace(train, data=resolve_source(train.data, file)))
    if data.get("finalists") is not None:  # on a table, the verification trains for real (the table's protocol)
        exp = dataclasses.replace(exp, finalists=parse_finalists(data["finalists"], data, file, search.trainer))
        if not stored:  # a run's own copy was accepted when it started: reading it (export, report) never refuses
            _check_finalists(exp)
    space.check_budgets(count_cost, num_classes=exp.classes or num_classes_hint(exp.train, file))
    return exp


def _on_table(exp: Experiment) -> Experiment:
    """``exp`` replayed on the table ``search.trainer`` names: its trainer the table's absolute path, its
    number of classes the table's; a :class:`ConfigError` naming the YAML, the key and the table when the
    table is missing or damaged, or its space or protocol differ from the YAML's (``nas.search.table``)."""
    path, table = read_table(exp.search.trainer, exp.file)
    check_space(table, path, exp.space, exp.file)
    check_replayable(exp.search, exp.objective, exp.file)
    replay = dataclasses.replace(
        exp, search=dataclasses.replace(exp.search, trainer=f"{TABLE_PREFIX}{path}"), classes=table.num_classes
    )
    check_protocol(table, path, protocol_of(replay), exp.file)
    return replay


def _check_finalists(exp: Experiment) -> None:
    """The verification is independent of the search it verifies: none of its training seeds is a seed the
    search's own trials were trained with (``train.seed``; on a table, the table's seed), and a search replayed
    on a table verifies on the data the table was built on (unless ``finalists.train.data`` chooses other data:
    ``nas.search.table.check_finalists_data``)."""
    f = exp.finalists
    if f is None:
        return
    draws, where, table = {int(exp.train.seed)}, "`train.seed`", None
    if is_table(exp.search.trainer):
        path, table = read_table(exp.search.trainer, exp.file)
        draws |= {int(s) for s in table.seeds.get("proxy", ())}
        recorded = table.protocol.get("train.seed")
        if isinstance(recorded, int) and not isinstance(recorded, bool):
            draws.add(recorded)
        where = f"`train.seed`, the seed of the table {path.name}"
    _check_finalist_seeds(f, draws, where, exp.file, int(exp.train.seed))
    if table is not None:
        chosen = bool((f.overrides.get("train") or {}).get("data"))
        check_finalists_data(table, path, f.train.data, data_identity(f.train.data), chosen, exp.file)


def _check_finalist_seeds(f: FinalistsConfig, draws: set[int], where: str, file: str | None, base: int) -> None:
    """None of the verification seeds (``finalists.train.seed`` + 1 .. + ``finalists.seeds``) may be one of
    ``draws``, the seeds the search's own trials were trained with (``where`` says whose): the "independent"
    verification would repeat the very draw it verifies. ``base``: the search's ``train.seed`` (the default)."""
    seeds = [f.seed_of(i) for i in range(f.seeds)]
    clash = sorted(draws.intersection(seeds))
    if not clash:
        return
    low = max(draws)
    default = (
        f", or no `finalists.train.seed` (the verification then trains at {base + 1} and on)" if base >= low else ""
    )
    raise ConfigError(
        file,
        "finalists.train.seed",
        f"makes the verification train at seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}, but "
        f"{' and '.join(map(str, clash))} {'is the seed' if len(clash) == 1 else 'are seeds'} the search's own trials "
        f"were trained with ({where}), so the verification would repeat the very draw it verifies",
        f"a `finalists.train.seed` of {low} or more (seeds {low + 1} to {low + f.seeds}){default}",
        value=f.train.seed,
    )


def parse_finalists(section: Any, data: dict, file: str | None, trainer: str | None = None) -> FinalistsConfig:
    """The ``finalists:`` section: its settings, and the verification protocol (the search YAML's ``train:`` and
    ``objective:`` with ``finalists.train`` / ``finalists.objective`` merged over them, validated by the same
    parsers; an error names ``finalists.train.<key>``; ``train.supernet`` is not inherited: the finalists of a
    weight-sharing search train from scratch). The verification trains with the search's ``trainer``;
    a search replayed on a table (``table:PATH``) verifies with the default trainer, under the table's protocol
    (which the YAML's ``train:`` must equal) and the overrides."""
    from nas.errors import check_keys
    from nas.search.trainable import DEFAULT_TRAINER
    from trainers.data.sources import resolve_source
    from trainers.objectives.registry import ObjectiveConfig
    from trainers.training.config import TrainConfig

    names = [f.name for f in dataclasses.fields(FinalistsConfig) if f.name not in ("overrides", "trainer")]
    section = dict(check_keys(section if section is not None else {}, names, file, "finalists"))
    over = {}
    for key in ("train", "objective"):
        value = section.pop(key, None)
        if value is not None and not isinstance(value, dict):
            raise ConfigError(
                file,
                f"finalists.{key}",
                f"must be a mapping of overrides of `{key}:`",
                "e.g. {steps: 28}" if key == "train" else "e.g. {val_eval_limit: 2000}",
                value=value,
            )
        over[key] = dict(value or {})
    settings = parse_dataclass(FinalistsConfig, section, file, "finalists")
    if settings.top_k == 0 and not settings.pareto:
        raise ConfigError(
            file,
            "finalists",
            "chooses no finalist (`top_k: 0` and `pareto: false`), so it would verify nothing",
            "`top_k` >= 1 or `pareto: true`; or leave out the `finalists:` section",
        )
    if "supernet" in over["train"]:
        raise ConfigError(
            file,
            "finalists.train.supernet",
            "is not a verification protocol: the finalists of a search are verified by training them from scratch "
            "(a weight-sharing search's too)",
            "leave it out (`train.supernet` of the search is not inherited by the verification)",
            value=over["train"]["supernet"],
        )
    base = dict(data.get("train") or {})
    base.pop("supernet", None)  # a weight-sharing search verifies by training from scratch
    train = parse_dataclass(TrainConfig, _merge(base, over["train"]), file, "finalists.train")
    named = {"named": file, "key": "finalists.train.data.path"} if over["train"].get("data") else {}
    train = dataclasses.replace(train, data=resolve_source(train.data, file, **named))
    objective = parse_dataclass(
        ObjectiveConfig, _merge(data.get("objective") or {}, over["objective"]), file, "finalists.objective"
    )
    for obj, prefix in ((train, "train"), (objective, "objective")):
        try:
            check_ranges(obj, prefix, file)
        except ConfigError as err:
            raise ConfigError(file, f"finalists.{err.key}", err.problem, err.allowed, err.value) from None
    trainer = DEFAULT_TRAINER if trainer is None or is_table(trainer) else trainer
    return dataclasses.replace(settings, train=train, objective=objective, overrides=over, trainer=trainer)


def _merge(base: Any, over: Any) -> Any:
    """``over`` merged into ``base``, mappings key by key (a copy)."""
    import copy

    if isinstance(base, dict) and isinstance(over, dict):
        out = dict(base)
        for k, v in over.items():
            out[k] = _merge(base[k], v) if k in base else copy.deepcopy(v)
        return out
    return copy.deepcopy(over)


def finalists_protocol(exp: Experiment) -> dict[str, Any]:
    """The verification protocol, flat as :func:`protocol_of` (``{}`` without a ``finalists:`` section)."""
    if exp.finalists is None:
        return {}
    f = exp.finalists
    return protocol_of(
        dataclasses.replace(
            exp, train=f.train, objective=f.objective, search=dataclasses.replace(exp.search, trainer=f.trainer)
        )
    )


def protocol_of(exp: Experiment) -> dict[str, Any]:
    """Everything besides the space that changes a trial's result, flat (``train.epochs``: 3, ...): the
    ``train:`` and ``objective:`` sections, ``search.trainer`` and the identity of the data (its files'
    count and size, not their path, so a run can move to another machine). Recorded in experiment.json."""
    out = flat(dataclasses.asdict(exp.train), "train")
    if exp.train.supernet is None:  # as a run recorded before `train.supernet` existed has it
        del out["train.supernet"]
    for where in ("path", "url", "md5", "download"):  # where the files come from, not what they are
        out.pop(f"train.data.{where}", None)
    out["train.data.files"] = data_identity(exp.train.data)
    out.update(flat(dataclasses.asdict(exp.objective), "objective"))
    out["search.trainer"] = exp.search.trainer
    if is_table(exp.search.trainer):  # a replay reads no data; the table is known by name and size
        table = Path(table_path(exp.search.trainer))
        out["train.data.files"] = "-"
        out["search.trainer"] = f"{TABLE_PREFIX}{table.name} ({files_identity(table)})"
    return out


def protocol_diff(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """``key: old -> new`` for each difference between two flat protocols. A key the old protocol lacks
    (recorded before it existed) counts as its default, so older runs resume."""
    defaults = default_protocol()
    missing = object()
    out = []
    for k in sorted(set(old) | set(new)):
        before = old[k] if k in old else defaults.get(k, missing)
        if before != new.get(k, missing):
            out.append(f"{k}: {old.get(k, '(none)')!r} -> {new.get(k, '(none)')!r}")
    return out


DURATION_FORMS = "a duration: a number with a unit (h, m or s), or several in that order, e.g. 90s, 45m, 2h, 1h30m"
_DURATION = re.compile(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?")


def parse_duration(value: Any, key: str = "search.time_budget", file: str | None = None) -> float:
    """Seconds of a duration such as ``90s``, ``45m``, ``2h`` or ``1h30m`` (a number with a unit, or several in
    the order h, m, s), within ``RANGES["search.time_budget"]``; a :class:`ConfigError` naming ``key`` (a YAML
    key, or a flag such as ``--time-budget``) and the allowed forms otherwise."""
    from nas.limits import RANGES

    lo, hi = RANGES["search.time_budget"]
    allowed = f"{DURATION_FORMS}; from {format_duration(lo)} to {format_duration(hi)}"
    text = value.strip().lower() if isinstance(value, str) else None
    match = _DURATION.fullmatch(text) if text else None
    if match is None or not any(match.groups()):
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        problem = "needs a unit" if number or re.fullmatch(r"\d+(?:\.\d+)?", text or "") else "is not a duration"
        raise ConfigError(file, key, problem, allowed, value=value)
    h, m, s = (float(g) if g else 0.0 for g in match.groups())
    seconds = h * 3600 + m * 60 + s
    if not lo <= seconds <= hi:
        raise ConfigError(file, key, "is outside its sane range", allowed, value=value)
    return seconds


def format_duration(seconds: float) -> str:
    """``1h30m``, ``45m``, ``90s``-style text of a duration (whole seconds), the form :func:`parse_duration` reads."""
    s = int(round(seconds))
    h, m, s = s // 3600, s // 60 % 60, s % 60
    return "".join(f"{v}{u}" for v, u in ((h, "h"), (m, "m"), (s, "s")) if v) or "0s"


def _check_time_budget(search: SearchConfig, file: str | None) -> None:
    if search.time_budget is not None:
        parse_duration(search.time_budget, "search.time_budget", file)


def _check_prescreen(search: SearchConfig, file: str | None) -> None:
    proxy = search.prescreen.proxy
    if proxy is None:
        return
    if proxy not in ZERO_COST:
        raise ConfigError(
            file,
            "search.prescreen.proxy",
            "is not a zero-cost proxy",
            f"one of {ZERO_COST.allowed()}, or null for no pre-screen",
            value=proxy,
        )
    if search.sampler == "grid":
        raise ConfigError(
            file,
            "search.prescreen.proxy",
            "has nothing to choose with the 'grid' sampler, which trains every candidate",
            "null with 'grid'; a pre-screen with 'tpe', 'nsga2' or 'random'",
            value=proxy,
        )


def _check_grid(search: SearchConfig, space: Any, file: str | None) -> None:
    """The grid sampler queues every candidate: refuse a space too large to enumerate."""
    if search.sampler == "grid" and space.size() > MAX_GRID:
        raise ConfigError(
            file,
            "search.sampler",
            f"is 'grid', which queues every candidate, but the space has {space.size():,} candidates",
            f"'grid' for spaces of at most {MAX_GRID:,} candidates; 'tpe', 'nsga2' or 'random' for larger ones",
            value=search.sampler,
        )


def load_experiment(path_or_name: str | Path) -> Experiment:
    """Read and validate a search YAML file, or a bundled space by name (``coatnet.yaml``)."""
    from nas.space.reading import load_yaml

    path, data = load_yaml(path_or_name)
    return experiment_from_dict(data, str(path))


def _check_trainer(path: str, file: str | None) -> None:
    if path == SearchConfig.trainer:
        return
    from nas.search.trainable import DEFAULT_TRAINER, RECORDED_TRAINERS, load_trainer

    try:
        load_trainer(path)
    except Exception as err:  # noqa: BLE001 - any import failure is the user's module
        why = (
            str(err)
            if isinstance(err, LookupError)
            else f"importing {path.partition(':')[0]} failed: {type(err).__name__}: {err}"
        )
        if path.partition(":")[0] == DEFAULT_TRAINER.partition(":")[0]:  # the module moved; its recorded name stays
            why += (
                f" (that module is now {RECORDED_TRAINERS[DEFAULT_TRAINER].partition(':')[0]}; of its old name only "
                f"{DEFAULT_TRAINER}, which recorded runs hold, stays valid)"
            )
        raise ConfigError(
            file,
            "search.trainer",
            why,
            "an importable `module:function` (on the driver and every worker), e.g. trainers.proxy:train_candidate",
            path,
        ) from None


def num_classes_hint(train: Any, file: str | None = None) -> int:
    """Classes of the training data, without loading it where the source tells (else the data is loaded)."""
    d = train.data
    known = {"digits": 10, "cifar10": 10, "cifar100": 100}
    if d.name in known:
        return known[d.name]
    if d.name == "synthetic":
        return d.synthetic_classes
    if d.name == "imagefolder" and d.path:
        root = Path(d.path).expanduser()
        sub = root / "train" if (root / "train").is_dir() else root
        if sub.is_dir():
            n = sum(1 for p in sub.iterdir() if p.is_dir())
            if n >= 2:
                return n
    try:
        n = _npz_classes(d.path) if d.name == "npz" and d.path else None
        if n is None:
            from trainers.data.loading import load_dataset

            n = load_dataset(d, 8, 3, file=file).num_classes
    except UserError:
        raise
    except Exception as err:  # noqa: BLE001 - reported as a user-facing data problem
        raise ConfigError(
            None, "train.data", f"could not be loaded to count its classes ({err})", "a readable data source"
        ) from None
    from nas.limits import check_value

    check_value(
        n, "num_classes", file, f"train.data ({d.name} {d.path}): its number of classes (the largest label + 1)"
    )
    return n


def images_hint(data: Any) -> int | None:
    """Images of a data source before ``limit`` and the validation split, known without decoding any (the
    built-in sizes, an npz's labels, an image folder's image files); ``None`` where that does not work (the
    loader then says what is wrong)."""
    d = data
    try:
        if d.name == "digits":
            return 1797
        if d.name == "synthetic":
            return int(d.synthetic_samples)
        if d.name in ("cifar10", "cifar100"):
            return 50_000  # the training batches
        if d.name == "npz" and d.path:
            import numpy as np

            with np.load(Path(d.path).expanduser(), allow_pickle=False) as z:
                return int(len(z["y"]))
        if d.name == "imagefolder" and d.path:
            from trainers.data.config import IMAGE_EXTS

            root = Path(d.path).expanduser()
            return sum(
                1
                for sub in root.iterdir()
                if sub.is_dir() and not sub.name.startswith(".")
                for f in sub.iterdir()
                if f.suffix.lower() in IMAGE_EXTS
            )
    except Exception:  # noqa: BLE001 - unreadable here: the loader says why
        return None
    return None


def _npz_classes(path: str) -> int | None:
    """Classes of an npz source from its labels alone, with numpy (``None`` when that does not work: the
    loader then reads it and reports what is wrong)."""
    import numpy as np

    try:
        with np.load(Path(path).expanduser(), allow_pickle=False) as z:
            y = z["y"]
            return int(y.max()) + 1 if y.ndim == 1 and y.size and y.dtype.kind in "iu" and y.min() >= 0 else None
    except Exception:  # noqa: BLE001 - unreadable here: the loader says why
        return None


def data_identity(cfg: Any) -> str:
    """What the data files of a path source are, without their path: ``"5 files, 153,268,000 bytes"``
    (``-`` for built-in sources). Part of a run's protocol: replaced data files change it. Folders are
    walked up to 200,000 entries."""
    return files_identity(cfg.path) if getattr(cfg, "path", None) else "-"


def files_identity(path: str | Path) -> str:
    """``"1 file, 154,000,490 bytes"`` / ``"5 files, ..."`` / ``"missing"`` for a file or folder (see
    :func:`data_identity`)."""
    root = Path(path).expanduser()
    try:
        if root.is_file():
            return f"1 file, {root.stat().st_size:,} bytes"
        if not root.is_dir():
            return "missing"
        n = size = 0
        for folder, dirs, files in __import__("os").walk(root):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for f in files:
                if f.startswith("."):
                    continue
                n += 1
                try:
                    size += (Path(folder) / f).stat().st_size
                except OSError:
                    pass
                if n >= 200_000:
                    return f"over {n:,} files"
        return f"{n:,} files, {size:,} bytes"
    except OSError as err:
        return f"unreadable ({err.strerror})"
