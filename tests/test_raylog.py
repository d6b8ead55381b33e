"""A normal nas-search run shows only coatnas's own lines: Ray's start-up notices go to search.log."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nas.runtime.raylog import ray_notices

BIN = Path(sys.executable).parent
NOTICE = "Token authentication is enabled"


def test_tiny_search_prints_no_ray_notice(write_space, tmp_path):
    space = write_space(extra="")
    space.write_text(space.read_text().replace("trials: 4", "trials: 2"))
    # a user's shell: no Ray address or auth mode set (the test session's own Ray sets both in os.environ)
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_MODE")}
    proc = subprocess.run(
        [str(BIN / "nas-search"), "--space", str(space), "--run-dir", str(tmp_path / "run")],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "[  2/2]" in proc.stdout and "nas-search: best" in proc.stdout
    assert NOTICE not in proc.stdout and NOTICE not in proc.stderr, proc.stderr
    assert "RAY_AUTH_MODE" not in proc.stdout + proc.stderr
    log = (tmp_path / "run" / "search.log").read_text()
    assert f"ray: warning: {NOTICE} for this Ray cluster" in log  # Ray said it; it went to the log


def test_notices_are_printed_when_the_start_fails(capsys):
    lines = []
    with pytest.raises(RuntimeError):
        with ray_notices(lines.append):
            logging.getLogger("ray._private.authentication.authentication_token_setup").warning("held %s", 1)
            raise RuntimeError("start failed")
    assert lines == [] and capsys.readouterr().err == "ray: warning: held 1\n"
    with ray_notices(lines.append):
        logging.getLogger("ray._private.authentication.x").warning("kept")
    assert lines == ["ray: warning: kept"] and capsys.readouterr().err == ""
    logger = logging.getLogger("ray._private.authentication")
    assert logger.propagate and not logger.handlers  # restored
