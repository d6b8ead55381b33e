"""The command a runtime piece works for (``nas-search``, ``nas-fidelity``), so that its messages name that
command, its folder and its own settings.

The runtime (lock, signals, Ray set-up) is shared; each command declares one :class:`Command` beside its
driver (``nas.search.tuning.SEARCH``, ``nas.fidelity.runner.FIDELITY``) and passes it down. A message
never advises a flag that the running command does not have.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Command:
    """What a runtime message needs to know about the command that runs.

    Args:
        name: the command as the user types it (``nas-search``).
        folder: what its folder is called (``run directory``).
        new_folder: how to start afresh in another folder (``a different `--name`/`--run-dir```).
        gpus: how the user sets GPUs per trial to ``{value}`` (``--gpus-per-trial {value}``).
        gpus_off: the whole advice that makes trials run on CPUs only.
        cpus: how the user sets CPUs per trial.
    """

    name: str
    folder: str
    new_folder: str
    gpus: str
    gpus_off: str
    cpus: str

    def resume(self, folder: object) -> str:
        """The command line that continues the work in ``folder``."""
        return f"`{self.name} --resume {folder}`"

    def gpus_setting(self, value: float) -> str:
        """How the user wrote (or would write) ``value`` GPUs per trial."""
        return self.gpus.format(value=f"{value:g}")
