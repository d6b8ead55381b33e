"""Safe file input and output: the one place every command reads a file it wrote, and writes any file.

Reading (``read_json``, ``read_jsonl``): a record file is parsed line by line into typed objects by the
caller's ``parse`` function, which raises :class:`Invalid` for a record it refuses (a wrong type, a NaN, a
missing key, a foreign file). What is documented as repairable is repaired: a torn last line of a JSONL file
(a process killed mid-write: no newline and not a whole record) is skipped when reading and cut off, into
``NAME.torn``, by :func:`repair_jsonl_tail` before anything is appended; a whole last line that only lacks its
newline gets one. Anything else is refused with one paragraph naming the file, the line and what to do.

Rules (issue 10; docs/search.md "Output files"):

- A file is written whole or not at all: the bytes go to a temporary file created exclusively
  (``tempfile.mkstemp``: ``O_CREAT | O_EXCL``, a fresh random name, never an existing path and never a
  symbolic link) in the target's own folder, are flushed and fsync'd, and replace the target with one
  ``os.replace`` (which replaces a link itself, never what it points at). Any failure removes the
  temporary file.
- A user-named output (``--out``) that exists is not replaced unless the user says so (``--force``);
  one that is not a regular file (a folder, a symbolic link, a device, a FIFO, a socket) is refused even
  with ``--force``; and the files of a search run directory are never an output of another command.
- Appends (``trials.jsonl``, ``search.log``) never follow a symbolic link (``O_NOFOLLOW``).

Operating-system failures (a full disk, a read-only or vanished folder) become one-paragraph
:class:`~nas.errors.UserError`s naming the file.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from nas.errors import UserError

T = TypeVar("T")
READ_MAX_BYTES = 1 << 30  # a record file past 1 GiB is not one of ours

# Files and folders a search run directory consists of (nas.search.rundir), and what a repair keeps aside beside
# them (NAME.torn, NAME.replaced-N, ...); never another command's output.
RUN_FILES = (
    "space.yaml",
    "experiment.json",
    "optuna.journal",
    "trials.jsonl",
    "leaderboard.csv",
    "leaderboard.json",
    "best.yaml",
    "search.log",
    "driver.lock",
    "pareto.png",
    "report.md",
    "tune",
)

_HINTS = {
    errno.ENOSPC: "the disk is full: free some space",
    errno.EFBIG: "the file is too large for this file system or the file-size limit (ulimit -f): free space or "
    "raise the limit",
    errno.EDQUOT: "the disk quota is exceeded: free some space",
    errno.EROFS: "the file system is read-only: choose a writable place",
    errno.EACCES: "permission denied: make it writable by this user or choose another place",
    errno.EPERM: "operation not permitted: make it writable by this user or choose another place",
    errno.ENOENT: "a folder on the way does not exist (or vanished)",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.ELOOP: "it is a symbolic link, which is never followed for writing",
    errno.ENXIO: "no reader: it is a FIFO (or a device) with no reader, not a regular file",
}


def os_problem(err: OSError) -> str:
    """``strerror`` plus what to do, for an ``OSError`` of a write."""
    hint = _HINTS.get(err.errno or 0)
    text = err.strerror or str(err)
    return f"{text}; {hint.split(': ', 1)[1]}" if hint and ": " in hint else (hint or text)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, data: str | bytes, *, what: str = "") -> Path:
    """Replace ``path`` with ``data`` atomically (see the module notes); return the path.

    ``what`` names the file in an error message (default: the path).
    """
    path = Path(path)
    raw = data.encode() if isinstance(data, str) else data
    folder = path.parent
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
        with os.fdopen(fd, "wb") as fh:
            fh.write(raw)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644 & ~_umask())
        os.replace(tmp, path)
        tmp = None
    except OSError as err:
        raise UserError(
            f"Cannot write {what or path}: {os_problem(err)}. Nothing was changed: the file keeps "
            "its previous content (or does not exist)."
        ) from None
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
    _fsync_dir(folder)
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def append_line(path: str | os.PathLike, text: str, *, sync: bool = False) -> None:
    """Append ``text`` to ``path`` (created if missing), never through a symbolic link, and only to a regular
    file: a FIFO there neither blocks the open (``O_NONBLOCK``) nor is written; it is an ``OSError``."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o644)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise OSError(errno.EINVAL, f"it is {_kind(mode)}, not a regular file", str(path))
        os.set_blocking(fd, True)
        os.write(fd, text.encode())
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)


def is_run_dir(folder: Path) -> bool:
    """``folder`` is a search run directory (it has the files ``nas-search`` writes)."""
    return (folder / "experiment.json").is_file() or (
        (folder / "space.yaml").is_file()
        and ((folder / "trials.jsonl").is_file() or (folder / "optuna.journal").is_file())
    )


TRAINED_FILES = ("model.safetensors", "model.yaml", "metrics.json")  # what nas-train writes into its --out


def is_trained_model(folder: Path) -> bool:
    """``folder`` holds a trained model (``nas-train``'s output: its weights and config side by side)."""
    return (folder / "model.safetensors").is_file() and (folder / "model.yaml").is_file()


def _trained_refusal(flag: str, shown: str, folder: Path) -> UserError:
    return UserError(
        f"{flag} {shown} is in the trained model {folder} (what `nas-train` wrote: model.safetensors, model.yaml, "
        "metrics.json); no other command writes over or into it (not even with --force). Choose a path outside "
        "that folder."
    )


def _inside_run(path: Path) -> Path | None:
    """The run directory ``path`` belongs to (as one of its own files), if any."""
    for parent in [path.parent, *path.parent.parents]:
        if is_run_dir(parent):
            rel = path.relative_to(parent).parts
            if rel and (rel[0] in RUN_FILES or rel[0].startswith(tuple(f"{f}." for f in RUN_FILES))):
                return parent
            return None
    return None


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISLNK, "a symbolic link"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def _writable_folder(folder: Path, shown: str, flag: str) -> None:
    """The folder exists (or can be created below an existing writable one) and is writable."""
    probe = folder
    while not probe.exists():
        if probe.is_symlink():  # a dangling link on the way
            raise UserError(f"{flag} {shown}: {probe} is a dangling symbolic link. Choose another place.")
        probe = probe.parent
    if not probe.is_dir():
        raise UserError(
            f"{flag} {shown}: {probe} is a file, not a folder, so nothing can be written below it. "
            "Choose another place."
        )
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UserError(
            f"{flag} {shown}: the folder {probe} is not writable by this user (permission denied or "
            "read-only). Choose a writable place."
        )


def check_output_file(
    path: str | os.PathLike, *, force: bool = False, flag: str = "--out", trained_ok: bool = False
) -> Path:
    """Refuse an output file that would destroy something; return it as a :class:`Path`.

    Refused: a file of a search run directory (always), a file of a trained model's folder (unless
    ``trained_ok``: ``nas-train`` replacing its own output), anything that is not a regular file (always), an
    existing regular file unless ``force``, and a place that cannot be written. Nothing is created.
    """
    p = Path(path).expanduser()
    shown = str(path)
    absolute = Path(os.path.abspath(p))
    try:
        st = os.lstat(p)
    except FileNotFoundError:
        st = None
    except OSError as err:
        raise UserError(f"{flag} {shown}: cannot check this path ({os_problem(err)}).") from None
    run = _inside_run(Path(os.path.realpath(absolute.parent)) / absolute.name)
    if run is not None:
        raise UserError(
            f"{flag} {shown} is a file of the search run directory {run}; a command never writes over "
            "a run's own files (not even with --force). Choose a path outside the run directory."
        )
    parent = Path(os.path.realpath(absolute.parent))
    if not trained_ok and absolute.name in TRAINED_FILES and is_trained_model(parent):
        raise _trained_refusal(flag, shown, parent)
    if st is not None:
        if not stat.S_ISREG(st.st_mode):
            raise UserError(
                f"{flag} {shown} exists and is {_kind(st.st_mode)}; only a regular file may be "
                "replaced (not even --force replaces anything else). Choose another path."
            )
        if not force:
            raise UserError(f"{flag} {shown} already exists. Pass --force to replace it, or choose another path.")
    _writable_folder(absolute.parent, shown, flag)
    return p


def check_output_dir(
    path: str | os.PathLike,
    names: tuple[str, ...],
    *,
    force: bool = False,
    flag: str = "--out",
    trained_ok: bool = False,
) -> Path:
    """Refuse an output folder that is not a folder, is a search run directory or (unless ``trained_ok``) a
    trained model's folder, or holds any of ``names`` (unless ``force``); each of ``names`` is checked like
    :func:`check_output_file`. Nothing is created."""
    p = Path(path).expanduser()
    shown = str(path)
    if p.is_symlink() or (p.exists() and not p.is_dir()):
        kind = "a symbolic link" if p.is_symlink() else "not a folder"
        raise UserError(f"{flag} {shown} exists and is {kind}. Choose a new or existing folder.")
    if p.is_dir() and is_run_dir(p):
        raise UserError(
            f"{flag} {shown} is a search run directory; a command never writes into a run's own "
            "folder (not even with --force). Choose another folder."
        )
    if not trained_ok and p.is_dir() and is_trained_model(p):
        raise _trained_refusal(flag, shown, p)
    for name in names:
        check_output_file(p / name, force=force, flag=flag, trained_ok=trained_ok)
    _writable_folder(Path(os.path.abspath(p)), shown, flag)
    return p


def make_dirs(path: Path, shown: str | None = None) -> None:
    """``mkdir -p`` with a one-paragraph error."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"Cannot create the folder {shown or path}: {os_problem(err)}.") from None


# ------------------------------------------------------------------------------------------------ reading
class Invalid(ValueError):
    """Raised by a ``parse`` function for a record it refuses; the message says what is wrong with it."""


def _no_nan(name: str) -> float:
    if name == "NaN":
        raise Invalid("it holds NaN, which no record of ours contains")
    return float(name)  # Infinity, -Infinity: the failed value of an axis


_REFUSE = object()


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object whose keys are each there once (``json`` silently keeps the last of two equal keys; no
    file of ours has two, so one that does was edited or is foreign)."""
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        twice = next(k for k, _ in pairs if k in seen or seen.add(k))
        raise Invalid(f"it holds the key {twice!r:.60} twice in one object (JSON would silently keep the last)")
    return out


def loads(text: str | bytes, *, nan: Any = _REFUSE) -> Any:
    """``json.loads`` that refuses NaN (a foreign or damaged record), keeping +/-Infinity, and a key repeated
    in one object. ``nan``: what a NaN decodes to instead, for a reader of a record format written before NaN
    was refused (the reader's ``parse`` then accepts that marker in the old format only)."""
    if nan is _REFUSE:
        return json.loads(text, parse_constant=_no_nan, object_pairs_hook=_unique)
    return json.loads(
        text, parse_constant=lambda name: nan if name == "NaN" else float(name), object_pairs_hook=_unique
    )


def open_regular(path: str | os.PathLike) -> tuple[int, int]:
    """``(descriptor, size)`` of ``path`` opened for reading, only if it is a regular file (a link to one
    counts). A FIFO does not block the open (``O_NONBLOCK``) and, like a device or a folder, is refused
    before anything is read: ``OSError`` whose ``strerror`` says what it is ("it is a FIFO, not a regular
    file"). The caller closes the descriptor."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, f"it is {_kind(st.st_mode)}, not a regular file", str(path))
        return fd, st.st_size
    except BaseException:
        os.close(fd)
        raise


def _read_bytes(path: Path, what: str) -> bytes:
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            raise UserError(f"{what} {path} is {_kind(st.st_mode)}, not a file this command wrote. Move it aside.")
        if st.st_size > READ_MAX_BYTES:
            raise UserError(
                f"{what} {path} is {st.st_size / 2**30:.1f} GiB, far larger than any file this command writes; "
                "it is not one of ours. Move it aside."
            )
        with open(path, "rb") as fh:
            return fh.read(READ_MAX_BYTES + 1)
    except OSError as err:
        raise UserError(f"Cannot read {what} {path}: {err.strerror or err}.") from None


def read_json(path: str | os.PathLike, parse: Callable[[Any], T], *, what: str, fix: str) -> T:
    """The JSON document at ``path`` through ``parse``; a damaged or foreign file is a :class:`UserError`
    naming the file and ending with ``fix`` (what the user can do)."""
    path = Path(path)
    data = _read_bytes(path, what)
    try:
        return parse(loads(data))
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as err:
        raise UserError(f"{what} {path} is damaged or not one of ours ({_why(err)}). {fix}") from None


def _why(err: BaseException) -> str:
    if isinstance(err, UnicodeDecodeError):
        return "not UTF-8 text"
    if isinstance(err, json.JSONDecodeError):
        return f"not JSON: {err.msg} at line {err.lineno}, column {err.colno}"
    if isinstance(err, KeyError):
        return f"the key {err.args[0]!r} is missing"
    if isinstance(err, RecursionError):
        return "nested too deeply"
    return str(err) or type(err).__name__


def _parses(line: bytes, parse: Callable[[Any], Any], nan: Any = _REFUSE) -> bool:
    try:
        parse(loads(line, nan=nan))
        return True
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError):
        return False


def jsonl_tail(
    path: str | os.PathLike, parse: Callable[[Any], Any], *, nan: Any = _REFUSE
) -> tuple[int, bytes, bool] | None:
    """``(offset, last line, whole)`` when the file's last line lacks its newline (``whole``: it is still a
    record ``parse`` accepts, read as :func:`read_jsonl` reads it with the same ``nan``), else ``None``."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return None
    if not data or data.endswith(b"\n"):
        return None
    start = data.rfind(b"\n") + 1
    return start, data[start:], _parses(data[start:], parse, nan)


def read_jsonl(
    path: str | os.PathLike,
    parse: Callable[[Any], T],
    *,
    what: str,
    fix: str,
    missing_ok: bool = True,
    nan: Any = _REFUSE,
) -> list[T]:
    """Every record of the JSONL file at ``path``, each through ``parse``, in order. Blank lines are skipped
    and so is a torn last line (see the module notes); any other bad line is a :class:`UserError` naming
    the file and the line and ending with ``fix``. ``nan``: as for :func:`loads`."""
    path = Path(path)
    if missing_ok and not os.path.lexists(path):
        return []
    data = _read_bytes(path, what)
    lines = data.split(b"\n")
    out: list[T] = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            out.append(parse(loads(line, nan=nan)))
        except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as err:
            if i == len(lines) - 1:  # no newline after it: the torn write of a killed process
                continue
            raise UserError(f"{what} {path}: line {i + 1} is damaged or not one of ours ({_why(err)}). {fix}") from None
    return out


def repair_jsonl_tail(path: str | os.PathLike, parse: Callable[[Any], Any], *, nan: Any = _REFUSE) -> bytes | None:
    """Make the file end on a whole line before anything is appended: a torn last line is cut off (kept in
    ``NAME.torn``) and returned; a whole record that only lacks its newline gets one."""
    path = Path(path)
    tail = jsonl_tail(path, parse, nan=nan)
    if tail is None:
        return None
    start, fragment, whole = tail
    if whole:
        append_line(path, "\n", sync=True)
        return None
    append_line(path.with_name(path.name + ".torn"), fragment.decode(errors="replace") + "\n", sync=True)
    atomic_write(path, path.read_bytes()[:start], what=str(path))
    return fragment


def append_jsonl(path: str | os.PathLike, record: Any, parse: Callable[[Any], Any], *, nan: Any = _REFUSE) -> None:
    """Append one record as a line (repairing the tail first, its last line read with ``nan`` as by
    :func:`read_jsonl`) and fsync."""
    repair_jsonl_tail(path, parse, nan=nan)
    append_line(path, json.dumps(record, sort_keys=True, default=float) + "\n", sync=True)


def record_format(data: dict, what: str, newest: int, *, unversioned: int = 1) -> int:
    """The ``format`` of a decoded record or file (``unversioned`` where it has none: written before format
    versions existed); :class:`Invalid` for anything but a whole number from ``unversioned`` to ``newest``,
    saying that a newer one needs a newer coatnas."""
    fmt = data.get("format", unversioned)
    if isinstance(fmt, bool) or not isinstance(fmt, int) or fmt < unversioned:
        raise Invalid(
            f"its format {fmt!r:.40} is not a format version of {what} (the key `format`: a whole number from "
            f"{unversioned} to {newest})"
        )
    if fmt > newest:
        raise Invalid(
            f"it is format {fmt} of {what}, written by a newer coatnas (this one reads {unversioned}..{newest}); "
            "upgrade coatnas (pip install -U coatnas) to read it"
        )
    return fmt


def read_safetensors(
    path: str | os.PathLike, *, what: str, fix: str, numpy: bool = False
) -> tuple[dict[str, Any], dict[str, str]]:
    """The one reader of a safetensors file (a trained model's weights, a timm export's, a supernet's state):
    ``(tensors, metadata)``, torch tensors (``numpy``: numpy arrays, without importing torch), opened only if it
    is a regular file; an unreadable, empty, truncated or foreign file is one paragraph naming
    it, saying it is not ``what`` and ending with ``fix``. Nothing is unpickled."""
    from safetensors import SafetensorError

    if numpy:
        from safetensors.numpy import load
    else:
        from safetensors.torch import load

    path = Path(path)
    try:
        fd, _ = open_regular(path)
    except OSError as err:
        raise UserError(f"{path}: cannot read {what} ({err.strerror or err}). {fix}") from None
    with os.fdopen(fd, "rb") as fh:
        raw = fh.read()
    if not raw:
        raise UserError(f"{path}: is empty, not {what}. {fix}")
    try:
        tensors = load(raw)
        header_len = int.from_bytes(raw[:8], "little")
        meta = json.loads(raw[8 : 8 + header_len]).get("__metadata__") or {}
    except (SafetensorError, ValueError, OSError, RuntimeError, TypeError, AttributeError) as err:
        why = " ".join(str(err).split())[:200] or "unreadable"
        raise UserError(
            f"{path}: not a safetensors weights file ({why}): it is truncated, damaged or foreign, not {what}. {fix}"
        ) from None
    return tensors, meta
