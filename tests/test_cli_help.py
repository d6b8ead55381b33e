"""Every flag of every command has a help text (issue 21), and ``nas-search --space`` names every bundled space.

Each command is a module of ``nas.cli`` whose ``build_parser()`` makes its argparse parser (``main`` parses
with it); the test walks the package, so a new command or flag is checked without editing this test."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent


def _commands() -> dict[str, str]:
    """{prog: module} of every nas.cli module with a ``build_parser``."""
    import nas.cli

    found = {}
    for info in pkgutil.iter_modules(nas.cli.__path__):
        module = importlib.import_module(f"nas.cli.{info.name}")
        if hasattr(module, "build_parser"):
            found[module.PROG] = module.__name__
    return found


SCRIPTS = _commands()


def _parser(module: str) -> argparse.ArgumentParser:
    return importlib.import_module(module).build_parser()


def test_every_console_script_is_checked():
    """The commands pyproject.toml installs are exactly the modules walked here."""
    text = (ROOT / "pyproject.toml").read_text()
    section = text.split("[project.scripts]", 1)[1].split("\n[", 1)[0]
    scripts = dict(re.findall(r'^([\w-]+)\s*=\s*"([\w.]+):main"', section, re.M))
    assert scripts == SCRIPTS
    assert set(SCRIPTS) == {
        "nas-search",
        "nas-train",
        "nas-export",
        "nas-report",
        "nas-fidelity",
        "nas-eval",
        "nas-predict",
    }


@pytest.mark.parametrize("prog", sorted(SCRIPTS))
def test_every_option_has_a_help_text(prog):
    parser = _parser(SCRIPTS[prog])
    assert parser.prog == prog
    missing = [
        "/".join(a.option_strings) or a.dest
        for a in parser._actions
        if a.help is None or a.help == argparse.SUPPRESS or not str(a.help).strip()
    ]
    assert not missing, f"{prog}: no help text for {missing}"
    assert parser.description and parser.description.strip()


@pytest.mark.parametrize("prog", sorted(SCRIPTS))
def test_help_renders(prog, capsys):
    with pytest.raises(SystemExit) as stop:
        _parser(SCRIPTS[prog]).parse_args(["--help"])
    assert stop.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: {prog}")


def _bundled_search_yamls() -> list[str]:
    """search_spaces/*.yaml that are search YAMLs (a top-level `space:`), found without the code under test."""
    names = []
    for path in sorted((ROOT / "search_spaces").glob("*.y*ml")):
        data = yaml.safe_load(path.read_text())
        if isinstance(data, dict) and "space" in data:
            names.append(path.name)
    return names


def test_space_help_lists_every_bundled_space(capsys):
    names = _bundled_search_yamls()
    assert len(names) >= 7 and "coatnet.yaml" in names
    (space,) = [a for a in _parser(SCRIPTS["nas-search"])._actions if "--space" in a.option_strings]
    missing = [n for n in names if n not in space.help]
    assert not missing, f"--space help does not name {missing}: {space.help}"
