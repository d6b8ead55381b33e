"""Bad user input, one table: every case must exit 2 with ONE paragraph naming the file, the key and what
is allowed, and no traceback (house rule; nas.errors / nas.cli.run_cli).

Each :class:`Case` runs a console entry point in-process (``nas.cli.<tool>.main(argv)``; the ``--address``
cases in a fresh process, see ``Case.process``) in a fresh tmp folder. In ``argv``, ``files`` texts and ``expect`` fragments, ``{tmp}`` stands for that folder and
``{port}`` for a local TCP port nobody listens on. Cases that touch a finished run check that the refusal
changed none of its files. ``python tests/test_bad_input.py`` prints the number of cases (quoted in the
README's reliability section); building the table needs no fixture.
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
BASE = (TINY_SPACE.replace("MAX_PARAMS", "null").replace("SAMPLER", "random").replace("EPOCHS", "1")
        .replace("trials: 4", "trials: 1").replace("max_concurrent: 2", "max_concurrent: 1"))

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
    return Case(id, "search", SEARCH, [SPACE, *expect], files, absent=[RUN], **kw)


def _as_root() -> str | None:
    return "root reads files without read permission" if hasattr(os, "geteuid") and os.geteuid() == 0 else None


def _has_cuda() -> str | None:
    import torch
    return "a CUDA GPU is visible, so --device cuda is fine here" if torch.cuda.is_available() else None


TRAIN_OUT = ["--out", "{tmp}/o"]  # nas-train's output folder; a refused command must not create it

CASES: list = [
    # ---------------------------------------------------------------------------- malformed YAML
    search_case("yaml-tab-indent", bad("  stem: {width: 8}", "\tstem: {width: 8}"),
                ["not valid YAML at line 3", "tab", "a YAML mapping with keys space, train, objective, search"]),
    search_case("yaml-unclosed-bracket", bad("width: [8, 16]}", "width: [8, 16}"),
                ["not valid YAML at line 5", "a YAML mapping with keys space, train, objective, search"]),
    search_case("yaml-not-a-mapping", text("- space\n- train\n"),
                ["must be a mapping", "space, train, objective, search"]),
    search_case("yaml-empty-file", text(""), ["`space`", "is missing", "input, stem, stages"]),
    Case("yaml-model-config-malformed", "train", ["{tmp}/m.yaml", *TRAIN_OUT],
         ["{tmp}/m.yaml", "not valid YAML at line 2", "architecture, image_size", "nas-export"],
         {"m.yaml": "architecture: [\n"}, absent=["{tmp}/o"]),
    Case("yaml-protocol-malformed", "train", ["coatnet-0", "--protocol", "{tmp}/p.yaml", *TRAIN_OUT],
         ["--protocol {tmp}/p.yaml", "not valid YAML at line 2", "tab", "`train:` section"],
         {"p.yaml": "train:\n\tepochs: 1\n"}, absent=["{tmp}/o"]),
    # ------------------------------------------------------------------ unknown keys, every level
    search_case("key-top-level", {"space.yaml": BASE + "serach: {trials: 2}\n"},
                ["`serach`: unknown key", "Did you mean `search`?", "space, train, objective, search"]),
    search_case("key-space", bad("  blocks:", "  budget: {max_params: 1000}\n  blocks:"),
                ["`space.budget`: unknown key", "Did you mean `budgets`?", "stages"]),
    search_case("key-stage", bad("S2: {block: [C, T]", "S2: {blocks: [C, T]"),
                ["`space.stages.S2.blocks`: unknown key", "Did you mean `block`?", "depth"]),
    search_case("key-stage-name", bad("    S4: {", "    S5: {"),
                ["`space.stages.S5`", "S1, S2, S3, S4"]),
    search_case("key-blocks", bad("head_dim: 8", "head_dims: 8"),
                ["`space.blocks.head_dims`: unknown key", "Did you mean `head_dim`?"]),
    search_case("key-train", bad("  epochs: 1", "  epoks: 1"),
                ["`train.epoks`: unknown key", "Did you mean `epochs`?", "batch_size"]),
    search_case("key-train-data", bad("synthetic_samples: 160", "synthetic_sample: 160"),
                ["`train.data.synthetic_sample`: unknown key", "Did you mean `synthetic_samples`?"]),
    search_case("key-objective", bad("{mode: single}", "{mode: single, gap_penalti: 0.1}"),
                ["`objective.gap_penalti`: unknown key", "Did you mean `gap_penalty`?"]),
    search_case("key-search", bad("{trials: 1,", "{trails: 1,"),
                ["`search.trails`: unknown key", "Did you mean `trials`?", "sampler"]),
    search_case("key-search-scheduler", bad("seed: 0}", "seed: 0, scheduler: {type: asha, grace: 1}}"),
                ["`search.scheduler.grace`: unknown key", "Did you mean `grace_period`?", "reduction_factor"]),
    Case("key-model-config", "train", ["{tmp}/m.yaml", *TRAIN_OUT],
         ["{tmp}/m.yaml", "`architecture.layot`: unknown key", "Did you mean `layout`?", "depths, layout"],
         {"m.yaml": MODEL.replace("layout:", "layot:")}, absent=["{tmp}/o"]),
    # ------------------------------------------------------------------------ out-of-range values
    search_case("range-depth-0", bad("S2: {block: [C, T], depth: 1", "S2: {block: [C, T], depth: 0"),
                ["`space.stages.S2.depth`", "(got 0)", "a positive integer"]),
    search_case("range-width-not-ints", bad("width: [8, 16]", "width: [8, wide]"),
                ["`space.stages.S1.width[1]`", "'wide'", "a positive integer"]),
    search_case("range-lr-negative", bad("  epochs: 1", "  epochs: 1\n  lr: -0.01"),
                ["`train.lr`", "(got -0.01)", "a number > 0"]),
    search_case("range-epochs-0", bad("  epochs: 1", "  epochs: 0"),
                ["`train.epochs`", "(got 0)", "an integer >= 1"]),
    search_case("range-trials-0", bad("{trials: 1,", "{trials: 0,"),
                ["`search.trials`", "(got 0)", "an integer >= 1"]),
    search_case("range-image-size-too-small", bad("image_size: 32", "image_size: 8"),
                ["`space.input.image_size`", "(got 8)", ">= 32"]),
    search_case("range-cpus-per-trial-0", bad("seed: 0}", "seed: 0, cpus_per_trial: 0}"),
                ["`search.cpus_per_trial`", "(got 0)", "a number > 0"]),
    search_case("range-sampler-name", bad("sampler: random", "sampler: bayes"),
                ["`search.sampler`", "'bayes'", "'tpe' | 'nsga2' | 'random' | 'grid'"]),
    search_case("range-layout-letter", bad("S2: {block: [C, T]", "S2: {block: [C, X]"),
                ["`space.stages.S2.block`", "'X'", "C, T"]),
    search_case("range-layout-rule", bad("  blocks:", "  rules: {layouts: [C-C-T]}\n  blocks:"),
                ["`space.rules.layouts[0]`", "'C-C-T'", "ViT_REL"]),
    Case("range-model-image-size", "train", ["{tmp}/m.yaml", *TRAIN_OUT],
         ["{tmp}/m.yaml", "`image_size`", "(got -3)", "an integer >= 8"],
         {"m.yaml": MODEL.replace("image_size: 32", "image_size: -3")}, absent=["{tmp}/o"]),
    # ------------------------------------------------------------------------- unknown data set
    search_case("dataset-unknown-name", bad("name: synthetic", "name: imagenet"),
                ["`train.data.name`", "'imagenet'", ALL_SOURCES]),
    Case("dataset-unknown-flag", "train", ["coatnet-0", "--data", "imagenet", *TRAIN_OUT],
         ["--data", "'imagenet'", "'digits'", "'npz'", "nas-train --help"], absent=["{tmp}/o"]),
    # ------------------------------------------------------------------------- unreadable paths
    Case("path-space-missing", "search", ["--space", "{tmp}/nope.yaml", "--run-dir", RUN],
         ["{tmp}/nope.yaml", "not found", "Bundled spaces:", "coatnet.yaml"], absent=[RUN]),
    Case("path-space-is-a-folder", "search", ["--space", "{tmp}/adir", "--run-dir", RUN],
         ["{tmp}/adir", "is a folder", "coatnet.yaml"], {"adir": None}, absent=[RUN]),
    search_case("path-space-unreadable", text(BASE), ["Cannot read", "Permission denied", "chmod u+r"],
                mode=0o000, skip_if=_as_root),
    search_case("path-imagefolder-missing", bad("{name: synthetic,", "{name: imagefolder, path: {tmp}/imgs,"),
                ["`train.data.path`", "imagefolder", "no such folder", "{tmp}/imgs", "one sub-folder per class"]),
    search_case("path-npz-missing", bad("{name: synthetic,", "{name: npz, path: missing.npz,"),
                ["`train.data.path`", "npz", "no such file", "{tmp}/missing.npz", "arrays `x`"]),
    # --gpus-per-trial 1 would fail later, on Ray: the missing data path is refused first, when the YAML loads
    Case("path-cifar-missing", "search", [*SEARCH, "--gpus-per-trial", "1"],
         [SPACE, "`train.data.path`", "cifar10", "no such folder", "{tmp}/cifar", "data_batch_1"],
         bad("{name: synthetic,", "{name: cifar10, path: {tmp}/cifar,"), absent=[RUN]),
    Case("path-train-cifar-missing", "train", ["coatnet-0", "--data", "cifar10", "--data-path", "{tmp}/cifar",
                                               *TRAIN_OUT],
         ["`--data-path` for source `cifar10`: no such folder", "{tmp}/cifar", "data_batch_1"], absent=["{tmp}/o"]),
    Case("path-train-data-path-required", "train", ["coatnet-0", "--data", "cifar10", *TRAIN_OUT],
         ["`--data-path`: is required for the `cifar10` source", "data_batch_1"], absent=["{tmp}/o"]),
    Case("path-train-protocol-data-missing", "train", ["{tmp}/m.yaml", "--protocol", "{tmp}/p.yaml", *TRAIN_OUT],
         ["{tmp}/p.yaml: `train.data.path` for source `npz`: no such file", "{tmp}/gone.npz", "arrays `x`"],
         {"m.yaml": MODEL, "p.yaml": "train:\n  data: {name: npz, path: gone.npz}\n"}, absent=["{tmp}/o"]),
    Case("path-train-protocol-missing", "train", ["coatnet-0", "--protocol", "{tmp}/p.yaml", *TRAIN_OUT],
         ["--protocol {tmp}/p.yaml: no such file", "`train:` section"], absent=["{tmp}/o"]),
    Case("path-train-model-yaml-missing", "train", ["{tmp}/best/model.yaml", *TRAIN_OUT],
         ["{tmp}/best/model.yaml", "no such model config file", "nas-export"], absent=["{tmp}/o"]),
    Case("path-train-model-is-a-folder", "train", ["{tmp}/r", *TRAIN_OUT],
         ["{tmp}/r: is a folder", "Did you mean {tmp}/r/best.yaml?"], {"r/best.yaml": MODEL}, absent=["{tmp}/o"]),
    Case("path-export-not-a-run", "export", [NOT_A_RUN, "--out", "{tmp}/m.yaml"],
         [NOT_A_RUN, "not a nas-search run directory", "experiment.json"], {"notarun/notes.txt": "mine"},
         absent=["{tmp}/m.yaml"]),
    Case("path-export-missing-dir", "export", ["{tmp}/nowhere", "--out", "{tmp}/m.yaml"],
         ["{tmp}/nowhere", "no such run directory", "runs/<name>"], absent=["{tmp}/m.yaml", "{tmp}/nowhere"]),
    Case("path-report-missing-dir", "report", ["{tmp}/nowhere"],
         ["{tmp}/nowhere", "no such run directory", "runs/<name>"], absent=["{tmp}/nowhere"]),
    Case("path-report-not-a-run", "report", [NOT_A_RUN],
         [NOT_A_RUN, "not a nas-search run directory", "experiment.json"], {"notarun/notes.txt": "mine"}),
    # ------------------------------------------------------------------------------- CLI flags
    Case("flag-trials-0", "search", [*SEARCH, "--trials", "0"], ["--trials", "(got 0)", ">= 1"], text(BASE),
         absent=[RUN]),
    Case("flag-cpus-per-trial-negative", "search", [*SEARCH, "--cpus-per-trial", "-1"],
         ["--cpus-per-trial", "(got -1)", "> 0"], text(BASE), absent=[RUN]),
    Case("flag-sampler-choice", "search", [*SEARCH, "--sampler", "bayes"],
         ["--sampler", "'bayes'", "'tpe', 'nsga2', 'random', 'grid'", "nas-search --help"], text(BASE),
         absent=[RUN]),
    Case("flag-resume-missing-run", "search", ["--resume", "{tmp}/nowhere"],
         ["--resume {tmp}/nowhere", "no experiment.json", "nas-search --space FILE"], absent=["{tmp}/nowhere"]),
    Case("flag-resume-changed-space", "search", ["--space", SPACE, "--resume", DONE, "--quiet"],
         ["Cannot resume {tmp}/done", "space changed", "space.stages.S2.depth: [1] -> [2]", "--name"],
         bad("S2: {block: [C, T], depth: 1", "S2: {block: [C, T], depth: 2"), needs="run"),
    Case("flag-train-epochs-0", "train", ["coatnet-0", "--epochs", "0", *TRAIN_OUT],
         ["--epochs", "(got 0)", "positive integer"], absent=["{tmp}/o"]),
    Case("flag-train-lr-negative", "train", ["coatnet-0", "--lr", "-1", *TRAIN_OUT],
         ["--lr", "(got -1", "> 0"], absent=["{tmp}/o"]),
    Case("flag-train-unknown-preset", "train", ["coatnet-9", *TRAIN_OUT],
         ["'coatnet-9'", "neither an existing model config YAML file nor a preset", "coatnet-0, coatnet-1"],
         absent=["{tmp}/o"]),
    Case("flag-train-device-cuda-without-gpu", "train", ["coatnet-0", "--device", "cuda", *TRAIN_OUT],
         ["'cuda'", "--device", "no CUDA GPU", "`auto`", "`cpu`"], absent=["{tmp}/o"], skip_if=_has_cuda),
    Case("flag-export-rank-0", "export", [DONE, "--rank", "0", "--out", "{tmp}/m.yaml"],
         ["--rank", "(got 0)", ">= 1"], needs="run", absent=["{tmp}/m.yaml"]),
    Case("flag-export-unknown-trial", "export", [DONE, "--trial", "999", "--out", "{tmp}/m.yaml"],
         ["{tmp}/done", "no finished trial '999'", "Finished trials:", "leaderboard.csv"], needs="run",
         absent=["{tmp}/m.yaml"]),
    # --------------------------------------------------------------------------------- clusters
    Case("cluster-address-nobody-answers", "search", ["--resume", DONE, "--trials", "2", "--address",
                                                      "127.0.0.1:{port}"],
         ["Cannot reach a Ray cluster at 127.0.0.1:{port}", "ray start --head --port={port}", "HOST:PORT"],
         needs="run", max_s=10.0, process=True),
    Case("cluster-address-malformed", "search", ["--resume", DONE, "--trials", "2", "--address", "host:notaport"],
         ["'host:notaport'", "HOST:PORT", "ray://HOST:PORT", "`auto`"], needs="run", max_s=10.0, process=True),
    Case("cluster-gpus-per-trial-without-gpus", "search", ["--resume", DONE, "--trials", "2",
                                                           "--gpus-per-trial", "1", "--quiet"],
         ["--gpus-per-trial 1", "the Ray cluster has none", "--gpus-per-trial 0"], needs="run"),
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
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != "driver.lock"}


def _main(cli: str):
    import importlib
    return importlib.import_module(f"nas.cli.{cli}").main


# --------------------------------------------------------------------------------------- the test
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
        before = _snapshot(tmp / "done")
    elif case.needs == "ray":
        request.getfixturevalue("ray_local")
    for rel, content in case.files.items():
        p = tmp / rel
        if content is None:
            p.mkdir(parents=True, exist_ok=True)
            continue
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(_fill(content, tmp, port))
        if case.mode is not None:
            p.chmod(case.mode)
    argv = [_fill(a, tmp, port) for a in case.argv]
    capsys.readouterr()  # drop what the fixtures printed (Ray's start-up notes)

    t0 = time.monotonic()
    if case.process:
        code = f"import sys; from nas.cli.{case.cli} import main; sys.exit(main(sys.argv[1:]))"
        proc = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=60,
                              env={k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"})
        rc, err = proc.returncode, proc.stderr
    else:
        try:
            rc = _main(case.cli)(argv)
        except SystemExit as exit_:  # argparse errors exit from inside main
            rc = exit_.code
        err = capsys.readouterr().err
    took = time.monotonic() - t0

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


if __name__ == "__main__":
    print(len(CASES))
