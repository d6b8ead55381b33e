"""Bad user input, one table: every case must exit 2 with ONE paragraph naming the file, the key and what
is allowed, and no traceback (house rule; nas.errors / nas.cli.run_cli).

Each :class:`Case` runs a console entry point in-process (``nas.cli.<tool>.main(argv)``; the ``--address``
cases in a fresh process, see ``Case.process``) in a fresh tmp folder. In ``argv``, ``files`` texts and
``expect`` fragments, ``{tmp}`` stands for that folder and ``{port}`` for a local TCP port nobody listens on.
Cases that touch a finished run check that the refusal changed none of its files. ``python
tests/test_bad_input.py`` prints the number of cases (quoted in docs/reliability.md); building the
table needs no fixture.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from conftest import TINY_SPACE  # noqa: E402

# A tiny valid search YAML; the cases corrupt it by text replacement (``bad(old, new)``) or by appending.
BASE = (
    TINY_SPACE.replace("MAX_PARAMS", "null")
    .replace("SAMPLER", "random")
    .replace("EPOCHS", "1")
    .replace("trials: 4", "trials: 1")
    .replace("max_concurrent: 2", "max_concurrent: 1")
)

# A model config as nas-export writes it (nas-train's CONFIG).
MODEL = """\
architecture: {layout: C-C-T-T, depths: [1, 1, 1, 1, 1], widths: [8, 8, 16, 16, 32]}
image_size: 32
num_classes: 4
in_chans: 1
"""

SPACE = "{tmp}/space.yaml"  # where ``bad``/``text`` write the search YAML
RUN = "{tmp}/run"
SEARCH = ["--space", SPACE, "--run-dir", RUN, "--quiet"]
# a finished one-trial run of BASE (built once per module with Ray, copied to {tmp}/done for a case)
DONE = "{tmp}/done"
NOT_A_RUN = "{tmp}/notarun"

ALL_SOURCES = "'digits' | 'synthetic' | 'cifar10' | 'cifar100' | 'imagefolder' | 'npz'"


@dataclasses.dataclass
class Case:
    """One bad input.

    Args:
        id: test id.
        (files values may also be bytes, or a callable ``f(path)`` that writes the file; ``links`` makes
        symbolic links ``{relative path: target}``; ``edits`` replaces text ``(relative path, old, new)`` in a
        file after the finished run was copied (a hand-edited run); ``read_only`` folders are made
        unwritable for the command, also for root (``chattr +i``), and restored afterwards. Every file that
        exists before the command must be byte-identical after it.)
        cli: ``search``, ``train``, ``export`` or ``report`` (the ``nas-<cli>`` console script).
        argv: its arguments.
        expect: fragments the error paragraph must contain (whitespace-normalised).
        files: files to write before the run, ``{relative path: text}``; ``None`` text makes a folder.
        needs: ``"ray"`` for the session's local Ray (2 CPUs, no GPU); ``"run"`` also copies a finished
            run to ``{tmp}/done`` and checks afterwards that none of its files changed.
        absent: paths that must not exist afterwards (nothing was created for a refused command).
        max_s: the refusal must come within this many seconds (not a hang).
        mode: chmod applied to the written files (``None``: leave them).
        skip_if: returns why the case cannot be shown on this machine (``None``: run it).
        process: run the console script in a fresh Python process, as a user does. Needed where the
            answer depends on this process not having started Ray yet: ``ray_local`` (and so the
            finished run) has, and an already initialised Ray makes ``--address`` moot in-process.
    """

    id: str
    cli: str
    argv: list[str]
    expect: list[str]
    files: dict[str, str | None] = dataclasses.field(default_factory=dict)
    needs: str | None = None
    absent: list[str] = dataclasses.field(default_factory=list)
    max_s: float | None = None
    mode: int | None = None
    process: bool = False
    skip_if: Callable[[], str | None] | None = None
    links: dict[str, str] = dataclasses.field(default_factory=dict)
    edits: list[tuple[str, str, str]] = dataclasses.field(default_factory=list)
    read_only: list[str] = dataclasses.field(default_factory=list)

    @property
    def prog(self) -> str:
        return f"nas-{self.cli}"


def bad(old: str, new: str) -> dict[str, str]:
    """The search YAML at SPACE: BASE with ``old`` replaced by ``new`` (``old`` must occur in BASE)."""
    assert old in BASE, old
    return {"space.yaml": BASE.replace(old, new)}


def text(content: str) -> dict[str, str]:
    """The search YAML at SPACE with exactly ``content``."""
    return {"space.yaml": content}


def search_case(id: str, files: dict, expect: list[str], **kw) -> Case:
    """A ``nas-search --space SPACE`` case; the message must name the file, and the run is not created."""
    return Case(id, "search", SEARCH, [SPACE, *expect], files, absent=[RUN, *kw.pop("absent", [])], **kw)


def _as_root() -> str | None:
    return "root reads files without read permission" if hasattr(os, "geteuid") and os.geteuid() == 0 else None


def _has_cuda() -> str | None:
    import torch

    return "a CUDA GPU is visible, so --device cuda is fine here" if torch.cuda.is_available() else None


TRAIN_OUT = ["--out", "{tmp}/o"]  # nas-train's output folder; a refused command must not create it

CASES: list = [
    # ---------------------------------------------------------------------------- malformed YAML
    search_case(
        "yaml-tab-indent",
        bad("  stem: {width: 8}", "\tstem: {width: 8}"),
        ["not valid YAML at line 3", "tab", "a YAML mapping with keys space, train, objective, search"],
    ),
    search_case(
        "yaml-unclosed-bracket",
        bad("width: [8, 16]}", "width: [8, 16}"),
        ["not valid YAML at line 5", "a YAML mapping with keys space, train, objective, search"],
    ),
    search_case(
        "yaml-not-a-mapping", text("- space\n- train\n"), ["must be a mapping", "space, train, objective, search"]
    ),
    search_case("yaml-empty-file", text(""), ["`space`", "is missing", "input, stem, stages"]),
    Case(
        "yaml-model-config-malformed",
        "train",
        ["{tmp}/m.yaml", *TRAIN_OUT],
        ["{tmp}/m.yaml", "not valid YAML at line 2", "architecture, image_size", "nas-export"],
        {"m.yaml": "architecture: [\n"},
        absent=["{tmp}/o"],
    ),
    Case(
        "yaml-protocol-malformed",
        "train",
        ["coatnet-0", "--protocol", "{tmp}/p.yaml", *TRAIN_OUT],
        ["--protocol {tmp}/p.yaml", "not valid YAML at line 2", "tab", "`train:` section"],
        {"p.yaml": "train:\n\tepochs: 1\n"},
        absent=["{tmp}/o"],
    ),
    # ------------------------------------------------------------------ unknown keys, every level
    search_case(
        "key-top-level",
        {"space.yaml": BASE + "serach: {trials: 2}\n"},
        ["`serach`: unknown key", "Did you mean `search`?", "space, train, objective, search"],
    ),
    search_case(
        "key-space",
        bad("  blocks:", "  budget: {max_params: 1000}\n  blocks:"),
        ["`space.budget`: unknown key", "Did you mean `budgets`?", "stages"],
    ),
    search_case(
        "key-stage",
        bad("S2: {block: [C, T]", "S2: {blocks: [C, T]"),
        ["`space.stages.S2.blocks`: unknown key", "Did you mean `block`?", "depth"],
    ),
    search_case("key-stage-name", bad("    S4: {", "    S5: {"), ["`space.stages.S5`", "S1, S2, S3, S4"]),
    search_case(
        "key-blocks",
        bad("head_dim: 8", "head_dims: 8"),
        ["`space.blocks.head_dims`: unknown key", "Did you mean `head_dim`?"],
    ),
    search_case(
        "key-train",
        bad("  epochs: 1", "  epoks: 1"),
        ["`train.epoks`: unknown key", "Did you mean `epochs`?", "batch_size"],
    ),
    search_case(
        "key-train-data",
        bad("synthetic_samples: 160", "synthetic_sample: 160"),
        ["`train.data.synthetic_sample`: unknown key", "Did you mean `synthetic_samples`?"],
    ),
    search_case(
        "key-objective",
        bad("{mode: single}", "{mode: single, gap_penalti: 0.1}"),
        ["`objective.gap_penalti`: unknown key", "Did you mean `gap_penalty`?"],
    ),
    search_case(
        "key-search",
        bad("{trials: 1,", "{trails: 1,"),
        ["`search.trails`: unknown key", "Did you mean `trials`?", "sampler"],
    ),
    search_case(
        "key-search-scheduler",
        bad("seed: 0}", "seed: 0, scheduler: {type: asha, grace: 1}}"),
        ["`search.scheduler.grace`: unknown key", "Did you mean `grace_period`?", "reduction_factor"],
    ),
    Case(
        "key-model-config",
        "train",
        ["{tmp}/m.yaml", *TRAIN_OUT],
        ["{tmp}/m.yaml", "`architecture.layot`: unknown key", "Did you mean `layout`?", "depths, layout"],
        {"m.yaml": MODEL.replace("layout:", "layot:")},
        absent=["{tmp}/o"],
    ),
    # ------------------------------------------------------------------------ out-of-range values
    search_case(
        "range-depth-0",
        bad("S2: {block: [C, T], depth: 1", "S2: {block: [C, T], depth: 0"),
        ["`space.stages.S2.depth`", "(got 0)", "a positive integer"],
    ),
    search_case(
        "range-width-not-ints",
        bad("width: [8, 16]", "width: [8, wide]"),
        ["`space.stages.S1.width[1]`", "'wide'", "a positive integer"],
    ),
    search_case(
        "range-lr-negative",
        bad("  epochs: 1", "  epochs: 1\n  lr: -0.01"),
        ["`train.lr`", "(got -0.01)", "a number > 0"],
    ),
    search_case("range-epochs-0", bad("  epochs: 1", "  epochs: 0"), ["`train.epochs`", "(got 0)", "an integer >= 1"]),
    search_case("range-trials-0", bad("{trials: 1,", "{trials: 0,"), ["`search.trials`", "(got 0)", "an integer >= 1"]),
    search_case(
        "range-image-size-too-small",
        bad("image_size: 32", "image_size: 8"),
        ["`space.input.image_size`", "(got 8)", ">= 32"],
    ),
    search_case(
        "range-cpus-per-trial-0",
        bad("seed: 0}", "seed: 0, cpus_per_trial: 0}"),
        ["`search.cpus_per_trial`", "(got 0)", "a number > 0"],
    ),
    search_case(
        "range-sampler-name",
        bad("sampler: random", "sampler: bayes"),
        ["`search.sampler`", "'bayes'", "'tpe' | 'nsga2' | 'gp' | 'random' | 'grid'"],
    ),
    search_case(
        "range-layout-letter",
        bad("S2: {block: [C, T]", "S2: {block: [C, X]"),
        ["`space.stages.S2.block`", "'X'", "C, T"],
    ),
    search_case(
        "range-layout-rule",
        bad("  blocks:", "  rules: {layouts: [C-C-T]}\n  blocks:"),
        ["`space.rules.layouts[0]`", "'C-C-T'", "ViT_REL"],
    ),
    Case(
        "range-model-image-size",
        "train",
        ["{tmp}/m.yaml", *TRAIN_OUT],
        ["{tmp}/m.yaml", "`image_size`", "(got -3)", "an integer >= 8"],
        {"m.yaml": MODEL.replace("image_size: 32", "image_size: -3")},
        absent=["{tmp}/o"],
    ),
    # ------------------------------------------------------------------------- unknown data set
    search_case(
        "dataset-unknown-name",
        bad("name: synthetic", "name: imagenet"),
        ["`train.data.name`", "'imagenet'", ALL_SOURCES],
    ),
    Case(
        "dataset-unknown-flag",
        "train",
        ["coatnet-0", "--data", "imagenet", *TRAIN_OUT],
        ["--data", "'imagenet'", "'digits'", "'npz'", "nas-train --help"],
        absent=["{tmp}/o"],
    ),
    # ------------------------------------------------------------------------- unreadable paths
    Case(
        "path-space-missing",
        "search",
        ["--space", "{tmp}/nope.yaml", "--run-dir", RUN],
        ["{tmp}/nope.yaml", "not found", "Bundled spaces:", "coatnet.yaml"],
        absent=[RUN],
    ),
    Case(
        "path-space-is-a-folder",
        "search",
        ["--space", "{tmp}/adir", "--run-dir", RUN],
        ["{tmp}/adir", "is a folder", "coatnet.yaml"],
        {"adir": None},
        absent=[RUN],
    ),
    search_case(
        "path-space-unreadable",
        text(BASE),
        ["Cannot read", "Permission denied", "chmod u+r"],
        mode=0o000,
        skip_if=_as_root,
    ),
    search_case(
        "path-imagefolder-missing",
        bad("{name: synthetic,", "{name: imagefolder, path: {tmp}/imgs,"),
        ["`train.data.path`", "imagefolder", "no such folder", "{tmp}/imgs", "one sub-folder per class"],
    ),
    search_case(
        "path-npz-missing",
        bad("{name: synthetic,", "{name: npz, path: missing.npz,"),
        ["`train.data.path`", "npz", "no such file", "{tmp}/missing.npz", "arrays `x`"],
    ),
    # --gpus-per-trial 1 would fail later, on Ray: the missing data path is refused first, when the YAML loads
    Case(
        "path-cifar-missing",
        "search",
        [*SEARCH, "--gpus-per-trial", "1"],
        [SPACE, "`train.data.path`", "cifar10", "no such folder", "{tmp}/cifar", "data_batch_1"],
        bad("{name: synthetic,", "{name: cifar10, path: {tmp}/cifar,"),
        absent=[RUN],
    ),
    Case(
        "path-train-cifar-missing",
        "train",
        ["coatnet-0", "--data", "cifar10", "--data-path", "{tmp}/cifar", *TRAIN_OUT],
        ["`--data-path` for source `cifar10`: no such folder", "{tmp}/cifar", "data_batch_1"],
        absent=["{tmp}/o"],
    ),
    Case(
        "path-train-data-path-required",
        "train",
        ["coatnet-0", "--data", "cifar10", *TRAIN_OUT],
        ["`--data-path`: is required for the `cifar10` source", "data_batch_1"],
        absent=["{tmp}/o"],
    ),
    Case(
        "path-train-protocol-data-missing",
        "train",
        ["{tmp}/m.yaml", "--protocol", "{tmp}/p.yaml", *TRAIN_OUT],
        ["{tmp}/p.yaml: `train.data.path` for source `npz`: no such file", "{tmp}/gone.npz", "arrays `x`"],
        {"m.yaml": MODEL, "p.yaml": "train:\n  data: {name: npz, path: gone.npz}\n"},
        absent=["{tmp}/o"],
    ),
    Case(
        "path-train-protocol-missing",
        "train",
        ["coatnet-0", "--protocol", "{tmp}/p.yaml", *TRAIN_OUT],
        ["--protocol {tmp}/p.yaml: no such file", "`train:` section"],
        absent=["{tmp}/o"],
    ),
    Case(
        "path-train-model-yaml-missing",
        "train",
        ["{tmp}/best/model.yaml", *TRAIN_OUT],
        ["{tmp}/best/model.yaml", "no such model config file", "nas-export"],
        absent=["{tmp}/o"],
    ),
    Case(
        "path-train-model-is-a-folder",
        "train",
        ["{tmp}/r", *TRAIN_OUT],
        ["{tmp}/r: is a folder", "Did you mean {tmp}/r/best.yaml?"],
        {"r/best.yaml": MODEL},
        absent=["{tmp}/o"],
    ),
    Case(
        "path-export-not-a-run",
        "export",
        [NOT_A_RUN, "--out", "{tmp}/m.yaml"],
        [NOT_A_RUN, "not a nas-search run directory", "experiment.json"],
        {"notarun/notes.txt": "mine"},
        absent=["{tmp}/m.yaml"],
    ),
    Case(
        "path-export-missing-dir",
        "export",
        ["{tmp}/nowhere", "--out", "{tmp}/m.yaml"],
        ["{tmp}/nowhere", "no such run directory", "runs/<name>"],
        absent=["{tmp}/m.yaml", "{tmp}/nowhere"],
    ),
    Case(
        "path-report-missing-dir",
        "report",
        ["{tmp}/nowhere"],
        ["{tmp}/nowhere", "no such run directory", "runs/<name>"],
        absent=["{tmp}/nowhere"],
    ),
    Case(
        "path-report-not-a-run",
        "report",
        [NOT_A_RUN],
        [NOT_A_RUN, "not a nas-search run directory", "experiment.json"],
        {"notarun/notes.txt": "mine"},
    ),
    # ------------------------------------------------------------------------------- CLI flags
    Case(
        "flag-trials-0", "search", [*SEARCH, "--trials", "0"], ["--trials", "(got 0)", ">= 1"], text(BASE), absent=[RUN]
    ),
    Case(
        "flag-cpus-per-trial-negative",
        "search",
        [*SEARCH, "--cpus-per-trial", "-1"],
        ["--cpus-per-trial", "(got -1)", "> 0"],
        text(BASE),
        absent=[RUN],
    ),
    Case(
        "flag-sampler-choice",
        "search",
        [*SEARCH, "--sampler", "bayes"],
        ["--sampler", "'bayes'", "'tpe', 'nsga2', 'gp', 'random', 'grid'", "nas-search --help"],
        text(BASE),
        absent=[RUN],
    ),
    Case(
        "flag-resume-missing-run",
        "search",
        ["--resume", "{tmp}/nowhere"],
        ["--resume {tmp}/nowhere", "no experiment.json", "nas-search --space FILE"],
        absent=["{tmp}/nowhere"],
    ),
    Case(
        "flag-resume-changed-space",
        "search",
        ["--space", SPACE, "--resume", DONE, "--quiet"],
        ["Cannot resume {tmp}/done", "space changed", "space.stages.S2.depth: [1] -> [2]", "--name"],
        bad("S2: {block: [C, T], depth: 1", "S2: {block: [C, T], depth: 2"),
        needs="run",
    ),
    Case(
        "flag-train-epochs-0",
        "train",
        ["coatnet-0", "--epochs", "0", *TRAIN_OUT],
        ["--epochs", "(got 0)", "positive integer"],
        absent=["{tmp}/o"],
    ),
    Case(
        "flag-train-lr-negative",
        "train",
        ["coatnet-0", "--lr", "-1", *TRAIN_OUT],
        ["--lr", "(got -1", "> 0"],
        absent=["{tmp}/o"],
    ),
    Case(
        "flag-train-unknown-preset",
        "train",
        ["coatnet-9", *TRAIN_OUT],
        ["'coatnet-9'", "neither an existing model config YAML file nor a preset", "coatnet-0, coatnet-1"],
        absent=["{tmp}/o"],
    ),
    Case(
        "flag-train-device-cuda-without-gpu",
        "train",
        ["coatnet-0", "--device", "cuda", *TRAIN_OUT],
        ["'cuda'", "--device", "no CUDA GPU", "`auto`", "`cpu`"],
        absent=["{tmp}/o"],
        skip_if=_has_cuda,
    ),
    Case(
        "flag-export-rank-0",
        "export",
        [DONE, "--rank", "0", "--out", "{tmp}/m.yaml"],
        ["--rank", "(got 0)", ">= 1"],
        needs="run",
        absent=["{tmp}/m.yaml"],
    ),
    Case(
        "flag-export-unknown-trial",
        "export",
        [DONE, "--trial", "999", "--out", "{tmp}/m.yaml"],
        ["{tmp}/done", "no finished trial '999'", "Finished trials:", "leaderboard.csv"],
        needs="run",
        absent=["{tmp}/m.yaml"],
    ),
    # --------------------------------------------------------------------------------- clusters
    Case(
        "cluster-address-nobody-answers",
        "search",
        ["--resume", DONE, "--trials", "2", "--address", "127.0.0.1:{port}"],
        ["Cannot reach a Ray cluster at 127.0.0.1:{port}", "ray start --head --port={port}", "HOST:PORT"],
        needs="run",
        max_s=10.0,
        process=True,
    ),
    Case(
        "cluster-address-malformed",
        "search",
        ["--resume", DONE, "--trials", "2", "--address", "host:notaport"],
        ["'host:notaport'", "HOST:PORT", "ray://HOST:PORT", "`auto`"],
        needs="run",
        max_s=10.0,
        process=True,
    ),
    Case(
        "cluster-gpus-per-trial-without-gpus",
        "search",
        ["--resume", DONE, "--trials", "2", "--gpus-per-trial", "1", "--quiet"],
        ["--gpus-per-trial 1", "the Ray cluster has none", "--gpus-per-trial 0"],
        needs="run",
    ),
]


# ------------------------------------------------------------------------------ issue 10: more classes
def _evil_cifar(folder: Path) -> None:
    """A CIFAR-10 folder whose data_batch_1 would run `touch {folder}/pwned` under plain pickle.load."""
    import pickle

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {folder.parent}/pwned",))

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(1, 6):
        (folder / f"data_batch_{i}").write_bytes(pickle.dumps({b"data": Evil(), b"labels": [0]}))


def _npz_huge_labels(path: Path) -> None:
    import numpy as np

    np.savez(path, x=np.zeros((8, 8, 8), dtype=np.uint8), y=np.array([0, 1, 2, 3, 0, 1, 2, 10**12]))


def _fifo(path: Path) -> None:
    os.mkfifo(path)


EXPORT = [DONE, "--out"]
REPORT_FILES = "leaderboard.csv, leaderboard.json, pareto.png, report.md"
GRID_HUGE = BASE.replace("depth: 1,", "depth: {min: 1, max: 64},").replace(
    "depth: [1, 2],", "depth: {min: 1, max: 64},"
)

CASES += [
    # ------------------------------------------------------- 1. output paths never destroy anything
    Case(
        "out-export-onto-run-trials",
        "export",
        [*EXPORT, "{tmp}/done/trials.jsonl", "--force"],
        ["--out {tmp}/done/trials.jsonl", "file of the search run directory", "not even with --force"],
        needs="run",
    ),
    Case(
        "out-export-onto-run-best",
        "export",
        [*EXPORT, "{tmp}/done/best.yaml"],
        ["--out {tmp}/done/best.yaml", "file of the search run directory"],
        needs="run",
    ),
    Case(
        "out-export-onto-run-dir",
        "export",
        [*EXPORT, "{tmp}/done"],
        ["--out {tmp}/done", "is a folder", "only a regular file may be replaced"],
        needs="run",
    ),
    Case(
        "out-export-existing-file",
        "export",
        [*EXPORT, "{tmp}/m.yaml"],
        ["--out {tmp}/m.yaml already exists", "--force"],
        {"m.yaml": "mine\n"},
        needs="run",
    ),
    Case(
        "out-export-symlink",
        "export",
        [*EXPORT, "{tmp}/m.yaml", "--force"],
        ["--out {tmp}/m.yaml", "a symbolic link", "not even --force"],
        {"victim.txt": "another user's\n"},
        needs="run",
        links={"m.yaml": "{tmp}/victim.txt"},
    ),
    Case(
        "out-export-dangling-symlink",
        "export",
        [*EXPORT, "{tmp}/m.yaml"],
        ["--out {tmp}/m.yaml", "a symbolic link"],
        needs="run",
        links={"m.yaml": "{tmp}/nowhere.yaml"},
        absent=["{tmp}/nowhere.yaml"],
    ),
    Case(
        "out-export-device",
        "export",
        [*EXPORT, "/dev/null", "--force"],
        ["--out /dev/null", "a character device", "regular file"],
        needs="run",
    ),
    Case(
        "out-export-fifo",
        "export",
        [*EXPORT, "{tmp}/pipe", "--force"],
        ["--out {tmp}/pipe", "a FIFO"],
        {"pipe": _fifo},
        needs="run",
    ),
    Case(
        "out-export-parent-is-a-file",
        "export",
        [*EXPORT, "{tmp}/notes.txt/m.yaml"],
        ["--out {tmp}/notes.txt/m.yaml", "is a file, not a folder"],
        {"notes.txt": "mine\n"},
        needs="run",
    ),
    Case(
        "out-export-parent-read-only",
        "export",
        [*EXPORT, "{tmp}/ro/m.yaml"],
        ["--out {tmp}/ro/m.yaml", "not writable"],
        {"ro": None},
        needs="run",
        read_only=["{tmp}/ro"],
        absent=["{tmp}/ro/m.yaml"],
    ),
    Case(
        "out-train-existing-files",
        "train",
        ["{tmp}/m.yaml", *TRAIN_OUT],
        ["--out {tmp}/o/model.safetensors already exists", "--force"],
        {"m.yaml": MODEL, "o/model.safetensors": "weights\n"},
        max_s=30,
    ),
    Case(
        "out-train-is-a-file",
        "train",
        ["{tmp}/m.yaml", *TRAIN_OUT],
        ["--out {tmp}/o", "not a folder"],
        {"m.yaml": MODEL, "o": "mine\n"},
        max_s=30,
    ),
    Case(
        "out-train-into-run-dir",
        "train",
        ["{tmp}/m.yaml", "--out", DONE, "--force"],
        ["--out {tmp}/done", "search run directory", "not even with --force"],
        {"m.yaml": MODEL},
        needs="run",
    ),
    Case(
        "out-train-symlinked-metrics",
        "train",
        ["{tmp}/m.yaml", *TRAIN_OUT, "--force"],
        ["--out {tmp}/o/metrics.json", "a symbolic link"],
        {"m.yaml": MODEL, "o": None, "victim": "keep\n"},
        links={"o/metrics.json": "{tmp}/victim"},
    ),
    Case(
        "out-report-existing-files",
        "report",
        [DONE, "--out", "{tmp}/rep"],
        ["--out {tmp}/rep/report.md already exists", "--force"],
        {"rep/report.md": "mine\n"},
        needs="run",
    ),
    Case(
        "out-report-into-other-run",
        "report",
        [DONE, "--out", DONE],
        ["--out {tmp}/done", "search run directory"],
        needs="run",
    ),
    Case(
        "out-report-read-only-run",
        "report",
        [DONE],
        ["{tmp}/done is not writable", "read-only", "--out DIR", REPORT_FILES],
        needs="run",
        read_only=["{tmp}/done"],
    ),
    # ---------------------------------------------- 3. resuming with a changed protocol is refused
    Case(
        "protocol-train-changed",
        "search",
        ["--space", SPACE, "--resume", DONE, "--quiet"],
        ["Cannot resume {tmp}/done", "training protocol changed", "train.epochs: 1 -> 2", "--new-protocol"],
        bad("  epochs: 1", "  epochs: 2"),
        needs="run",
    ),
    Case(
        "protocol-objective-changed",
        "search",
        ["--space", SPACE, "--resume", DONE, "--quiet"],
        ["Cannot resume {tmp}/done", "objective.mode: 'single' -> 'both'", "--new-protocol"],
        bad("{mode: single}", "{mode: both}"),
        needs="run",
    ),
    Case(
        "protocol-trainer-changed",
        "search",
        ["--space", SPACE, "--resume", DONE, "--quiet"],
        [
            "Cannot resume {tmp}/done",
            "search.trainer: 'trainers.proxy:train_candidate' -> 'chaos_trainer:train'",
            "--new-protocol",
        ],
        bad("seed: 0}", "seed: 0, trainer: 'chaos_trainer:train'}"),
        needs="run",
    ),
    Case(
        "protocol-data-changed",
        "search",
        ["--space", SPACE, "--resume", DONE, "--quiet"],
        ["Cannot resume {tmp}/done", "train.data.synthetic_classes: 4 -> 5", "--new-protocol"],
        bad("synthetic_classes: 4", "synthetic_classes: 5"),
        needs="run",
    ),
    Case(
        "protocol-run-space-yaml-train-edited",
        "search",
        ["--resume", DONE, "--quiet"],
        ["Cannot resume {tmp}/done", "train.batch_size: 32 -> 16", "--new-protocol"],
        needs="run",
        edits=[("done/space.yaml", "  batch_size: 32\n", "  batch_size: 16\n")],
    ),
    Case(
        "protocol-run-space-yaml-space-edited",
        "search",
        ["--resume", DONE, "--quiet"],
        ["Cannot resume {tmp}/done", "no longer matches the fingerprint", "space.yaml was edited", "--name"],
        needs="run",
        edits=[("done/space.yaml", "monotone: true", "monotone: false")],
    ),
    # ------------------------------------------------------------ 5. tracebacks become one paragraph
    search_case(
        "yaml-not-utf8",
        {"space.yaml": BASE.encode().replace(b"synthetic,", b"synth\xe9tic,")},
        ["is not UTF-8 text", "at line 12", "UTF-8"],
    ),
    search_case(
        "yaml-binary",
        {"space.yaml": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe"},
        ["is not UTF-8 text", "binary file"],
    ),
    search_case("yaml-nested-too-deeply", text("space: " + "[" * 20000), ["nested too deeply"]),
    search_case(
        "budget-nan",
        bad("max_params: null", "max_params: .nan"),
        ["`space.budgets.max_params`", "positive number or null", "(got nan)", "1e18"],
    ),
    search_case(
        "budget-inf",
        bad("max_macs: null", "max_macs: .inf"),
        ["`space.budgets.max_macs`", "positive number or null", "(got inf)"],
    ),
    search_case(
        "train-lr-nan",
        bad("  epochs: 1", "  epochs: 1\n  lr: .nan"),
        ["`train.lr`", "must be a finite number", "(got nan)"],
    ),
    search_case(
        "train-lr-inf",
        bad("  epochs: 1", "  epochs: 1\n  lr: .inf"),
        ["`train.lr`", "must be a finite number", "(got inf)"],
    ),
    search_case(
        "objective-weight-inf",
        bad("{mode: single}", "{mode: single, weight_capacity: .inf}"),
        ["`objective.weight_capacity`", "finite", "(got inf)"],
    ),
    search_case(
        "seed-search-negative", bad("seed: 0}", "seed: -1}"), ["`search.seed`", "(got -1)", "from 0 to 4_294_967_295"]
    ),
    search_case(
        "seed-train-negative", bad("  epochs: 1", "  epochs: 1\n  seed: -5"), ["`train.seed`", "(got -5)", "from 0 to"]
    ),
    search_case(
        "range-stream-above-mb-negative",
        bad("synthetic_difficulty: 0.3}", "synthetic_difficulty: 0.3, stream_above_mb: -5}"),
        ["`train.data.stream_above_mb`", "(got -5)", ">= 0 (0: always stream", "null (never stream)"],
    ),
    search_case(
        "range-stream-above-mb-not-a-number",
        bad("synthetic_difficulty: 0.3}", "synthetic_difficulty: 0.3, stream_above_mb: 2GB}"),
        ["`train.data.stream_above_mb`", "wrong type", "'2GB'", "a number or null"],
    ),
    search_case(
        "seed-data-too-large",
        bad("synthetic_difficulty: 0.3}", "synthetic_difficulty: 0.3, seed: 4294967296}"),
        ["`train.data.seed`", "(got 4294967296)", "to 4_294_967_295"],
    ),
    Case(
        "seed-flag-negative",
        "search",
        [*SEARCH, "--seed", "-1"],
        ["`--seed`", "(got -1)", "from 0"],
        text(BASE),
        absent=[RUN],
    ),
    Case(
        "seed-train-flag-negative",
        "train",
        ["{tmp}/m.yaml", "--seed", "-3", *TRAIN_OUT],
        ["`--seed`", "(got -3)", "from 0"],
        {"m.yaml": MODEL},
        absent=["{tmp}/o"],
    ),
    Case(
        "train-lr-flag-nan",
        "train",
        ["{tmp}/m.yaml", "--lr", "nan", *TRAIN_OUT],
        ["--lr must be a finite number > 0", "(got nan)", "at most 10"],
        {"m.yaml": MODEL},
        absent=["{tmp}/o"],
    ),
    Case(
        "train-lr-flag-inf",
        "train",
        ["{tmp}/m.yaml", "--lr", "inf", *TRAIN_OUT],
        ["--lr must be a finite number > 0", "(got inf)"],
        {"m.yaml": MODEL},
        absent=["{tmp}/o"],
    ),
    Case(
        "train-lr-diverges",
        "train",
        ["{tmp}/m.yaml", "--protocol", "{tmp}/p.yaml", "--lr", "10", "--quiet", *TRAIN_OUT],
        ["Training diverged", "lr 10", "Nothing was written", "Lower the learning rate"],
        {
            "m.yaml": MODEL,
            "p.yaml": "train:\n  data: {name: synthetic, synthetic_samples: 160, "
            "synthetic_classes: 4}\n  epochs: 3\n  grad_clip: 0\n  warmup: 0\n",
        },
        absent=["{tmp}/o"],
    ),
    Case(
        "train-data-labels-unallocatable",
        "train",
        ["{tmp}/m.yaml", "--data", "npz", "--data-path", "{tmp}/d.npz", *TRAIN_OUT],
        ["number of classes of the data", "{tmp}/d.npz", "(got 1000000000001)", "from 1 to 100_000"],
        {"m.yaml": MODEL, "d.npz": _npz_huge_labels},
        absent=["{tmp}/o"],
    ),
    search_case(
        "search-data-labels-unallocatable",
        {**bad("{name: synthetic,", "{name: npz, path: {tmp}/d.npz,"), "d.npz": _npz_huge_labels},
        ["`train.data.path` for source `npz`", "number of classes", "(got 1000000000001)"],
    ),
    Case(
        "run-dir-parent-is-a-file",
        "search",
        ["--space", SPACE, "--run-dir", "{tmp}/notes.txt/run", "--quiet"],
        ["Cannot create the folder", "{tmp}/notes.txt/run", "not a folder"],
        {**text(BASE), "notes.txt": "mine\n"},
    ),
    Case(
        "run-dir-parent-read-only",
        "search",
        ["--space", SPACE, "--run-dir", "{tmp}/ro/run", "--quiet"],
        ["Cannot create the folder", "{tmp}/ro/run", "make it writable"],
        {**text(BASE), "ro": None},
        read_only=["{tmp}/ro"],
        absent=["{tmp}/ro/run"],
    ),
    Case(
        "run-dir-read-only-resume",
        "search",
        ["--resume", DONE, "--trials", "2", "--quiet"],
        ["Cannot resume {tmp}/done", "not writable", "nas-report {tmp}/done --out DIR"],
        needs="run",
        read_only=["{tmp}/done"],
    ),
    # --------------------------------------------------------------- 6. every count has a sane maximum
    search_case(
        "max-depth-1e9",
        bad("S2: {block: [C, T], depth: 1", "S2: {block: [C, T], depth: 1000000000"),
        ["`space.stages.S2.depth`", "above its sane maximum", "(got 1000000000)", "at most 64"],
        max_s=10,
    ),
    search_case(
        "max-stem-depth",
        bad("stem: {width: 8}", "stem: {width: 8, depth: [2, 100000]}"),
        ["`space.stem.depth[1]`", "at most 64"],
        max_s=10,
    ),
    search_case(
        "max-width",
        bad("S4: {block: [T], depth: 1, width: 32}", "S4: {block: [T], depth: 1, width: 65536}"),
        ["`space.stages.S4.width`", "at most 8,192"],
        max_s=10,
    ),
    search_case(
        "max-range-huge",
        bad("S3: {block: [C, T], depth: [1, 2]", "S3: {block: [C, T], depth: {min: 1, max: 100000000000}"),
        ["`space.stages.S3.depth`", "expands to 100,000,000,000 choices", "at most 1024 choices"],
        max_s=10,
    ),
    search_case(
        "max-range-max-above-limit",
        bad("S3: {block: [C, T], depth: [1, 2]", "S3: {block: [C, T], depth: {min: 1, max: 100, step: 50}"),
        ["`space.stages.S3.depth.max`", "at most 64"],
        max_s=10,
    ),
    search_case(
        "max-list-too-long",
        bad("width: [8, 16]", "width: [" + ", ".join(str(8 * i) for i in range(1, 2001)) + "]"),
        ["`space.stages.S1.width`", "lists 2,000 choices", "at most 1024"],
        max_s=10,
    ),
    search_case(
        "max-image-size",
        bad("image_size: 32", "image_size: 1000000"),
        ["`space.input.image_size`", "(got 1000000)", "from 32 to 1024"],
        max_s=10,
    ),
    search_case("max-channels", bad("channels: 1", "channels: 100000"), ["`space.input.channels`", "from 1 to 64"]),
    search_case(
        "max-trials",
        bad("{trials: 1,", "{trials: 1000000000,"),
        ["`search.trials`", "(got 1000000000)", "from 1 to 100_000"],
    ),
    search_case("max-epochs", bad("  epochs: 1", "  epochs: 10000000"), ["`train.epochs`", "to 10_000"]),
    search_case(
        "max-batch-size", bad("  batch_size: 32", "  batch_size: 1000000000"), ["`train.batch_size`", "to 65_536"]
    ),
    search_case(
        "max-synthetic-samples",
        bad("synthetic_samples: 160", "synthetic_samples: 1000000000000"),
        ["`train.data.synthetic_samples`", "to 1_000_000"],
        max_s=10,
    ),
    search_case(
        "max-concurrent", bad("max_concurrent: 1", "max_concurrent: 10000000"), ["`search.max_concurrent`", "to 4096"]
    ),
    search_case(
        "max-grid-space",
        {"space.yaml": GRID_HUGE.replace("sampler: random", "sampler: grid")},
        ["`search.sampler`", "queues every candidate", "at most 100,000 candidates"],
        max_s=20,
    ),
    search_case("max-budget", bad("max_params: null", "max_params: 1.0e+30"), ["`space.budgets.max_params`", "1e18"]),
    Case(
        "max-flag-samples",
        "search",
        ["--space", SPACE, "--dry-run", "--samples", "1000000000"],
        ["`--samples`", "(got 1000000000)", "to 10_000"],
        text(BASE),
        max_s=10,
    ),
    Case(
        "max-flag-cpus-inf",
        "search",
        [*SEARCH, "--cpus-per-trial", "inf"],
        ["--cpus-per-trial must be a finite number", "(got inf)"],
        text(BASE),
        absent=[RUN],
    ),
    Case(
        "max-train-image-size",
        "train",
        ["coatnet-0", "--image-size", "100000", *TRAIN_OUT],
        ["`--image-size`", "(got 100000)", "from 8 to 1024"],
        absent=["{tmp}/o"],
        max_s=10,
    ),
    Case(
        "max-model-depth-1e9",
        "train",
        ["{tmp}/m.yaml", *TRAIN_OUT],
        ["{tmp}/m.yaml", "`architecture.depths[2]`", "(got 1000000000)", "from 1 to 64"],
        {"m.yaml": MODEL.replace("depths: [1, 1, 1, 1, 1]", "depths: [1, 1, 1000000000, 1, 1]")},
        absent=["{tmp}/o"],
        max_s=10,
    ),
    Case(
        "max-model-classes",
        "train",
        ["{tmp}/m.yaml", *TRAIN_OUT],
        ["{tmp}/m.yaml", "`num_classes`", "(got 1000000000000)", "to 100_000"],
        {"m.yaml": MODEL.replace("num_classes: 4", "num_classes: 1000000000000")},
        absent=["{tmp}/o"],
    ),
    Case(
        "max-protocol-steps",
        "train",
        ["{tmp}/m.yaml", "--protocol", "{tmp}/p.yaml", *TRAIN_OUT],
        ["{tmp}/p.yaml", "`train.steps`", "to 100_000_000"],
        {"m.yaml": MODEL, "p.yaml": "train:\n  steps: 1000000000000\n"},
        absent=["{tmp}/o"],
    ),
    # ------------------------------------------------- 7. a refused start leaves nothing behind
    Case(
        "refused-storage-unopenable",
        "search",
        [*SEARCH, "--storage", "sqlite:///{tmp}/nowhere/x/study.db"],
        ["Cannot open the Optuna storage", "sqlite:///{tmp}/nowhere/x/study.db"],
        text(BASE),
        needs="ray",
        absent=[RUN, "{tmp}/nowhere"],
    ),
    Case(
        "refused-storage-scheme",
        "search",
        [*SEARCH, "--storage", "redis://localhost"],
        ["--storage", "not a database URL", "sqlite:///"],
        text(BASE),
        absent=[RUN],
    ),
    Case(
        "refused-gpus-new-run",
        "search",
        [*SEARCH, "--gpus-per-trial", "1"],
        ["`--gpus-per-trial 1`", "the Ray cluster has none"],
        text(BASE),
        needs="ray",
        absent=[RUN],
    ),
    # ---------------------------------------------------------------- 8. code execution is not silent
    Case(
        "cifar-pickle-runs-code",
        "train",
        ["{tmp}/m.yaml", "--data", "cifar10", "--data-path", "{tmp}/cifar", *TRAIN_OUT],
        ["`--data-path`", "{tmp}/cifar/data_batch_1", "refused to load the global", "system", "numpy arrays"],
        {"m.yaml": MODEL, "cifar": _evil_cifar},
        absent=["{tmp}/pwned", "{tmp}/o"],
    ),
    search_case(
        "trainer-not-importable",
        bad("seed: 0}", "seed: 0, trainer: 'no_such_module_x:train'}"),
        ["`search.trainer`", "importing no_such_module_x failed", "module:function"],
    ),
    # ------------------------------------------------------------------------------- 9. smaller
    search_case(
        "dup-key-top-level",
        {"space.yaml": BASE + "search: {trials: 2}\n"},
        ["`search`: appears twice", "at line 16 and at line 17", "each key once"],
    ),
    search_case(
        "dup-key-stage",
        bad("S2: {block: [C, T], depth: 1,", "S2: {block: [C, T], depth: 1, depth: 2,"),
        ["`depth`: appears twice", "at line 6 and at line 6"],
    ),
    search_case(
        "dup-key-train",
        bad("  epochs: 1", "  epochs: 1\n  epochs: 3"),
        ["`epochs`: appears twice", "at line 13 and at line 14"],
    ),
    Case(
        "dup-key-model-config",
        "train",
        ["{tmp}/m.yaml", *TRAIN_OUT],
        ["{tmp}/m.yaml", "`image_size`: appears twice", "line 2 and at line 5"],
        {"m.yaml": MODEL + "image_size: 64\n"},
        absent=["{tmp}/o"],
    ),
    Case(
        "dup-key-protocol",
        "train",
        ["{tmp}/m.yaml", "--protocol", "{tmp}/p.yaml", *TRAIN_OUT],
        ["{tmp}/p.yaml", "`train`: appears twice", "line 1 and at line 3"],
        {"m.yaml": MODEL, "p.yaml": "train:\n  epochs: 1\ntrain:\n  epochs: 2\n"},
        absent=["{tmp}/o"],
    ),
    Case(
        "name-with-space",
        "search",
        ["--space", SPACE, "--name", "my run", "--quiet"],
        ["--name 'my run' is not a valid run name", "letters, digits, '-', '_' and '.'"],
        text(BASE),
        absent=["runs/my run"],
    ),
    Case(
        "name-with-slash",
        "search",
        ["--space", SPACE, "--name", "a/b", "--quiet"],
        ["--name 'a/b' is not a valid run name"],
        text(BASE),
        absent=["runs/a"],
    ),
    Case(
        "name-dot-first",
        "search",
        ["--space", SPACE, "--name", "..", "--quiet"],
        ["--name '..' is not a valid run name", "(not first)"],
        text(BASE),
    ),
    Case(
        "name-from-space-stem",
        "search",
        ["--space", "{tmp}/my space.yaml", "--quiet"],
        ["The run name 'my space' (the space file's stem) is not a valid run name", "--name NAME"],
        {"my space.yaml": BASE},
        absent=["runs/my space"],
    ),
    Case(
        "gpus-from-yaml-key",
        "search",
        SEARCH,
        ["`search.gpus_per_trial: 1` (in {tmp}/space.yaml)", "the Ray cluster has none"],
        bad("seed: 0}", "seed: 0, gpus_per_trial: 1}"),
        needs="ray",
        absent=[RUN],
    ),
]


def _id(case) -> str:
    return (case.values[0] if hasattr(case, "values") else case).id


# ------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, request):
    """A one-trial run of BASE, finished with the session's local Ray (about a second of training)."""
    request.getfixturevalue("ray_local")
    from nas.search import run

    root = tmp_path_factory.mktemp("finished")
    (root / "space.yaml").write_text(BASE)
    res = run(str(root / "space.yaml"), run_dir=str(root / "done"), progress=False)
    assert res.completed == 1
    return root / "done"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _fill(text: str, tmp: Path, port: int) -> str:
    return text.replace("{tmp}", str(tmp)).replace("{port}", str(port))


def _snapshot(folder: Path) -> dict[str, bytes]:
    """Every file of a run directory but driver.lock (which only names the last driver)."""
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != "driver.lock"
    }


def _main(cli: str):
    import importlib

    return importlib.import_module(f"nas.cli.{cli}").main


# --------------------------------------------------------------------------------------- the test
def _tree(folder: Path) -> dict[str, bytes]:
    """Every file and link under ``folder`` (links by their target, never followed); unreadable files by
    their mode, folders by their names."""
    out = {}
    for p in sorted(folder.rglob("*")):
        rel = str(p.relative_to(folder))
        if p.is_symlink():
            out[rel] = b"link -> " + os.readlink(p).encode()
        elif p.is_file() and p.name != "driver.lock":
            try:
                out[rel] = p.read_bytes()
            except OSError:
                out[rel] = f"unreadable {p.stat().st_mode:o}".encode()
        elif p.is_dir():
            out[rel] = b"<dir>"
    return out


def _set_read_only(folder: Path, on: bool) -> bool:
    """Make ``folder`` unwritable (``chattr +i``: also for root) or writable again; False if impossible."""
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        proc = subprocess.run(["chattr", "+i" if on else "-i", str(folder)], capture_output=True)
        return proc.returncode == 0
    folder.chmod(0o555 if on else 0o755)
    return True


@pytest.mark.parametrize("case", CASES, ids=_id)
def test_bad_input_gives_one_paragraph_and_exit_2(case: Case, tmp_path, capsys, request):
    why = case.skip_if() if case.skip_if else None
    if why:
        pytest.skip(why)
    port = _free_port()
    tmp = tmp_path
    before = None
    if case.needs == "run":
        shutil.copytree(request.getfixturevalue("finished_run"), tmp / "done")
    elif case.needs == "ray":
        request.getfixturevalue("ray_local")
    for rel, old, new in case.edits:
        p = tmp / rel
        text_ = p.read_text()
        assert old in text_, (rel, old)
        p.write_text(text_.replace(old, _fill(new, tmp, port)))
    if case.needs == "run":
        before = _snapshot(tmp / "done")
    for rel, content in case.files.items():
        p = tmp / rel
        if content is None:
            p.mkdir(parents=True, exist_ok=True)
            continue
        p.parent.mkdir(parents=True, exist_ok=True)
        if callable(content):
            content(p)
        elif isinstance(content, bytes):
            p.write_bytes(content)
        else:
            p.write_text(_fill(content, tmp, port))
        if case.mode is not None:
            p.chmod(case.mode)
    for rel, target in case.links.items():
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(_fill(target, tmp, port), tmp / rel)
    argv = [_fill(a, tmp, port) for a in case.argv]
    everything = _tree(tmp)
    frozen = []
    capsys.readouterr()  # drop what the fixtures printed (Ray's start-up notes)

    try:
        for rel in case.read_only:
            folder = Path(_fill(rel, tmp, port))
            if not _set_read_only(folder, True):
                pytest.skip(f"cannot make {folder} read-only here")
            frozen.append(folder)
        t0 = time.monotonic()
        if case.process:
            code = f"import sys; from nas.cli.{case.cli} import main; sys.exit(main(sys.argv[1:]))"
            proc = subprocess.run(
                [sys.executable, "-c", code, *argv],
                capture_output=True,
                text=True,
                timeout=60,
                env={k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"},
            )
            rc, err = proc.returncode, proc.stderr
        else:
            try:
                rc = _main(case.cli)(argv)
            except SystemExit as exit_:  # argparse errors exit from inside main
                rc = exit_.code
            err = capsys.readouterr().err
        took = time.monotonic() - t0
    finally:
        for folder in frozen:
            _set_read_only(folder, False)

    assert rc == 2, f"exit status {rc}, stderr:\n{err}"
    assert "Traceback" not in err, err
    assert err.startswith(f"{case.prog}: error: "), err
    assert "\n\n" not in err.strip(), f"more than one paragraph:\n{err}"
    msg = " ".join(err.split())
    for frag in case.expect:
        frag = " ".join(_fill(frag, tmp, port).split())
        assert frag in msg, f"{frag!r} not in the message:\n{msg}"
    if case.max_s is not None:
        assert took < case.max_s, f"took {took:.1f} s"
    for path in case.absent:
        assert not Path(_fill(path, tmp, port)).exists(), f"{path} was created by a refused command"
    if before is not None:
        assert _snapshot(tmp / "done") == before, "a refused command changed the finished run"
    after = _tree(tmp)
    changed = sorted(k for k in everything if after.get(k) != everything[k])
    assert not changed, f"a refused command changed or removed pre-existing files: {changed}"


if __name__ == "__main__":
    print(len(CASES))
