"""Connecting a driver to Ray, the one set-up of ``nas-search`` and ``nas-fidelity``: a local instance or an
existing cluster, checked before use.

:func:`start_ray` is what both commands call: Ray's environment switches, its start-up notices into the
command's log (``nas.runtime.raylog``), the connection (:func:`connect`: ``ray.init(address=...)`` retries
for about a minute when nobody answers, so the address is probed first with a short TCP timeout), the
command's signal handlers put back after ``ray.init`` (``nas.runtime.signals``), and the per-trial
resources checked against the cluster (:func:`check_resources`), in the running command's own words
(``nas.runtime.command``). Each worker then uses exactly the CPUs its trial was given as torch threads
(``nas.search.trainable.WorkerSetup.enter``).
"""

from __future__ import annotations

import os
import re
import signal
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from nas.errors import UserError
from nas.runtime.command import Command
from nas.runtime.signals import Interrupted

if TYPE_CHECKING:
    from nas.runtime.signals import StopSignals


RAY_ENV = {
    "RAY_AIR_NEW_OUTPUT": "0",  # Tune's old console reporter, silenced by verbose=0: the commands print their own lines
    "TUNE_DISABLE_SIGINT_HANDLER": "1",  # Ctrl-C is the command's (nas.runtime.signals), not Tune's
    "RAY_DEDUP_LOGS": "0",
}
"""Environment defaults set before Ray is imported (a value the user set is kept)."""

DEFAULT_GCS_PORT = 6379
ADDRESS_HELP = (
    "`--address` takes HOST:PORT of a Ray head node (the GCS port `ray start --head` prints, "
    "6379 by default), `ray://HOST:PORT` for a Ray Client server (port 10001 by default), or "
    "`auto` for a cluster already running on this machine"
)


@dataclass(frozen=True)
class ClusterAddress:
    """A parsed ``--address`` value; ``host`` is ``None`` for ``auto``."""

    text: str
    host: str | None = None
    port: int | None = None
    client: bool = False


def parse_address(text: str) -> ClusterAddress:
    """Parse ``HOST:PORT``, ``ray://HOST:PORT`` or ``auto``; raise :class:`UserError` otherwise."""
    text = text.strip()
    if text == "auto":
        return ClusterAddress(text)
    client = text.startswith("ray://")
    rest = text[len("ray://") :] if client else text
    host, sep, port_text = rest.rpartition(":")
    if not sep:
        host, port_text = rest, str(10001 if client else DEFAULT_GCS_PORT)
    if host.startswith("[") and host.endswith("]"):  # an IPv6 address: [::1]:6379
        host = host[1:-1]
        usable = re.fullmatch(r"[0-9A-Fa-f:.]+", host) is not None and ":" in host
    else:  # a host name or an IPv4 address: ASCII letters, digits, '.', '-', '_' (no ':', no spaces)
        usable = re.fullmatch(r"[A-Za-z0-9._-]+", host) is not None
    # ASCII digits only: str.isdigit() also takes '²' or '٣', which int() refuses or reads as another port
    if not usable or not re.fullmatch(r"[0-9]{1,5}", port_text) or not 0 < int(port_text) < 65536:
        raise UserError(f"Bad cluster address {text!r}: {ADDRESS_HELP}.")
    return ClusterAddress(text, host, int(port_text), client)


def probe(address: ClusterAddress, timeout: float = 10.0) -> None:
    """Check that something answers at ``address`` within ``timeout`` seconds."""
    if address.host is None:
        return
    try:
        with socket.create_connection((address.host, address.port), timeout=timeout):
            return
    except TimeoutError:
        why = f"no answer within {timeout:g} s"
    except OSError as err:
        why = err.strerror or str(err)
    raise UserError(
        f"Cannot reach a Ray cluster at {address.text} ({why}). Start the head node there with "
        f"`ray start --head --port={address.port}`, check the host name and any firewall, or leave out "
        f"`--address` to run on this machine alone. {ADDRESS_HELP}."
    )


def connect(address: str | None, *, num_cpus: int | None = None, timeout: float = 10.0) -> bool:
    """Make sure Ray is initialised; return ``True`` when this call started it (so the caller shuts it down).

    ``address=None`` reuses a running Ray in this process or starts a local instance; otherwise the driver
    joins the cluster at ``address`` after :func:`probe`.
    """
    import ray

    text = address or os.environ.get("RAY_ADDRESS") or None
    parsed = parse_address(text) if text and text != "local" else None
    if ray.is_initialized():  # a notebook or test that started Ray itself: use it, if it is the one asked for
        if parsed is not None and parsed.host is not None and not parsed.client:
            running = ray.get_runtime_context().gcs_address
            if running.rpartition(":")[2] != str(parsed.port):
                raise UserError(
                    f"This process is already connected to the Ray cluster at {running}, not "
                    f"{parsed.text}. Call ray.shutdown() first, or leave out the address."
                )
        return False
    kwargs = dict(include_dashboard=False, log_to_driver=False, configure_logging=False)
    if parsed is None:
        # "local": a fresh instance even when `ray start` runs a cluster on this machine.
        ray.init(address="local", num_cpus=num_cpus, **kwargs)
        return True
    probe(parsed, timeout)
    try:
        ray.init(address=parsed.text, **kwargs)
    except ConnectionError as err:
        raise UserError(
            f"Could not join a Ray cluster at {parsed.text}: {err}. Something answers there, so "
            "if it is a Ray head node it may use token authentication (Ray 2.5x+ turns it on when "
            "~/.ray/auth_token exists): run the driver with RAY_AUTH_MODE=token and the head's "
            "token (~/.ray/auth_token or RAY_AUTH_TOKEN), or start every node with the same "
            f"RAY_AUTH_MODE. {ADDRESS_HELP}."
        ) from None
    except Exception as err:  # noqa: BLE001 - e.g. token authentication refused
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        if "auth" not in first.lower() and "token" not in first.lower():
            raise
        raise UserError(
            f"The Ray cluster at {parsed.text} refused this driver ({first}). Ray token "
            "authentication is on there: copy ~/.ray/auth_token from the head node to this machine "
            "(or set RAY_AUTH_TOKEN), or run every node and the driver with the same RAY_AUTH_MODE. "
            "See docs/cluster.md."
        ) from None
    return True


def check_resources(
    cpus_per_trial: float,
    gpus_per_trial: float,
    command: Command,
    *,
    gpus_from: str | None = None,
    cpus_from: str | None = None,
) -> None:
    """Refuse per-trial requests that no node of the connected cluster can ever satisfy.

    ``gpus_from``/``cpus_from`` say where the value was set (by default ``command``'s own setting, such as
    ``--gpus-per-trial 1``; a search YAML's ``search.gpus_per_trial`` when the file set it), for the message,
    which advises ``command``'s own settings only.
    """
    import ray

    gpus_from = gpus_from or command.gpus_setting(gpus_per_trial)
    cpus_from = cpus_from or command.cpus

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    total_gpus = sum(n["Resources"].get("GPU", 0) for n in nodes)
    if gpus_per_trial > 0 and total_gpus == 0:
        raise UserError(
            f"{gpus_from} asks for GPUs, but the Ray cluster has none "
            f"({len(nodes)} node(s), {sum(n['Resources'].get('CPU', 0) for n in nodes):g} CPUs). Use "
            f"{command.gpus_off} to train on CPUs, or add GPU nodes (`ray start --num-gpus N`)."
        )
    fits = [
        n
        for n in nodes
        if n["Resources"].get("CPU", 0) >= cpus_per_trial and n["Resources"].get("GPU", 0) >= gpus_per_trial
    ]
    if not fits:
        biggest = max(((n["Resources"].get("CPU", 0), n["Resources"].get("GPU", 0)) for n in nodes), default=(0, 0))
        raise UserError(
            f"No Ray node can hold one trial of {cpus_per_trial:g} CPU(s) and {gpus_per_trial:g} GPU(s): the "
            f"largest node has {biggest[0]:g} CPUs and {biggest[1]:g} GPUs. Lower {cpus_from} / "
            f"{gpus_from} (fractions such as 0.25 GPU pack several trials on one card)."
        )


def start_ray(
    command: Command,
    address: str | None,
    *,
    cpus_per_trial: float,
    gpus_per_trial: float,
    log: Callable[[str], None],
    signals: StopSignals | None = None,
    gpus_from: str | None = None,
    cpus_from: str | None = None,
) -> bool:
    """Join (or start) Ray for ``command`` and check its per-trial resources; ``True`` when this call started
    Ray (the caller shuts it down). Ray's start-up notices go to ``log`` (the command's log file), not the
    terminal; ``signals`` are put back in place after ``ray.init``. A refused start leaves Ray as it was."""
    for key, value in RAY_ENV.items():
        os.environ.setdefault(key, value)
    import ray

    from nas.runtime.raylog import ray_notices

    try:
        with ray_notices(log):
            started = connect(address)
    except SystemExit as stop:  # ray.init's own SIGTERM handler exits with the signal's number: a pause too
        if stop.code != signal.SIGTERM:
            raise
        if ray.is_initialized():
            ray.shutdown()
        if signals is not None and signals.received is None:
            signals.received = signal.SIGTERM
        raise Interrupted(signal.SIGTERM) from None
    if signals is not None:
        signals.install()  # ray.init puts a SIGTERM handler of its own (a C++ stack dump) in place of ours
    try:
        check_resources(cpus_per_trial, gpus_per_trial, command, gpus_from=gpus_from, cpus_from=cpus_from)
    except BaseException:
        if started:
            ray.shutdown()
        raise
    return started
