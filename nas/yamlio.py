"""Reading user YAML files: UTF-8 only, no duplicate keys, bounded nesting.

``yaml.safe_load`` silently keeps the last of two equal keys, decodes with whatever the platform says and
raises ``RecursionError`` on very deep nesting. :func:`load_yaml_file` / :func:`load_yaml_text` refuse all
three with a one-paragraph :class:`~nas.errors.ConfigError` (duplicate keys name both lines); YAML syntax
errors still raise ``yaml.YAMLError`` and unreadable files ``OSError`` for the caller's own message.

YAML 1.1 (what PyYAML reads) and YAML 1.2 (what most other tools read) disagree on some plain numbers:
``010`` is the octal 8 in 1.1 and 10 in 1.2, and ``1:30`` the base-60 number 90 in 1.1 and a string in 1.2.
Such a number is refused (naming its key and line) rather than read one way silently: write ``10`` (or
``8``), or quote it for a text.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml

from nas.errors import ConfigError

MAX_BYTES = 16 * 1024 * 1024  # a search YAML or model config is a few KB


class _StrictLoader(yaml.SafeLoader):
    """A ``SafeLoader`` that refuses duplicate mapping keys."""

    file: str | None = None
    allowed: str | None = None

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            self.flatten_mapping(node)
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                try:
                    key = self.construct_object(key_node, deep=True)
                    hash(key)
                except (TypeError, yaml.YAMLError):
                    continue  # the base class reports unhashable keys with its own message
                line = key_node.start_mark.line + 1
                if key in seen:
                    raise ConfigError(
                        self.file,
                        str(key),
                        f"appears twice in one mapping, at line {seen[key]} "
                        f"and at line {line} (YAML would silently keep only the second)",
                        "each key once per mapping: delete or rename one of them",
                    )
                seen[key] = line
        return super().construct_mapping(node, deep=deep)


_INT, _FLOAT = "tag:yaml.org,2002:int", "tag:yaml.org,2002:float"
_OCTAL = re.compile(r"[-+]?0[0-9_]+")  # 010: 8 in YAML 1.1, 10 in YAML 1.2


def _refuse_yaml11_numbers(root: yaml.Node, file: str | None) -> None:
    """Refuse a plain number that YAML 1.1 and 1.2 read differently (an octal ``010``, a base-60 ``1:30``)."""
    todo: list[tuple[yaml.Node, str]] = [(root, "")]
    seen: set[int] = set()
    while todo:  # iterative, and each node once: aliases may share or nest nodes
        node, path = todo.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                name = key.value if isinstance(key, yaml.ScalarNode) else "?"
                where = f"{path}.{name}" if path else str(name)
                todo += [(key, where), (value, where)]
        elif isinstance(node, yaml.SequenceNode):
            todo += [(item, f"{path}[{i}]") for i, item in enumerate(node.value)]
        elif isinstance(node, yaml.ScalarNode) and node.tag in (_INT, _FLOAT) and node.style is None:
            text = node.value
            construct = yaml.SafeLoader.construct_yaml_int if node.tag == _INT else yaml.SafeLoader.construct_yaml_float
            if ":" in text:
                value = construct(yaml.SafeLoader(""), node)
                problem = f"the base-60 number {value!r}, YAML 1.2 as the text '{text}'"
                allowed = f"the number itself (e.g. {value!r}), or '{text}' in quotes for a text"
            elif node.tag == _INT and _OCTAL.fullmatch(text):
                value = construct(yaml.SafeLoader(""), node)
                problem = f"the octal number {value}, YAML 1.2 as {int(text.replace('_', ''))}"
                allowed = (
                    f"the number without leading zeros (e.g. {int(text.replace('_', ''))}, or {value} if octal "
                    f"was meant), or '{text}' in quotes for a text"
                )
            else:
                continue
            raise ConfigError(
                file,
                path or "<top level>",
                f"is written `{text}` (line {node.start_mark.line + 1}), which YAML 1.1 (this reader) reads "
                f"as {problem}",
                allowed,
            )


def load_yaml_text(data: str | bytes, file: str | None = None, allowed: str | None = None) -> Any:
    """Parse YAML text (bytes must be UTF-8); see the module notes for what is refused."""
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError as err:
            line = data[: err.start].count(b"\n") + 1
            binary = b"\0" in data[:4096]
            raise ConfigError(
                file,
                "<top level>",
                f"is not UTF-8 text{' (it looks like a binary file)' if binary else ''}: "
                f"byte 0x{data[err.start]:02x} at line {line} cannot be decoded",
                allowed or "a YAML text file in UTF-8 encoding",
            ) from None
    if data.startswith("\ufeff"):
        data = data[1:]
    loader = _StrictLoader(data)
    loader.file, loader.allowed = file, allowed
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _refuse_yaml11_numbers(node, file)
        return loader.construct_document(node)
    except RecursionError:
        raise ConfigError(
            file,
            "<top level>",
            "is nested too deeply to be a config file",
            allowed or "a YAML mapping a few levels deep",
        ) from None
    finally:
        loader.dispose()


def load_yaml_file(path: str | os.PathLike, allowed: str | None = None) -> Any:
    """Read and parse the YAML file ``path`` (``OSError`` if unreadable, ``yaml.YAMLError`` if malformed)."""
    path = Path(path)
    with open(path, "rb") as fh:
        data = fh.read(MAX_BYTES + 1)
    if len(data) > MAX_BYTES:
        raise ConfigError(
            str(path),
            "<top level>",
            f"is larger than {MAX_BYTES // 2**20} MiB, too large for a config file",
            allowed or "a YAML text file of a few KB",
        )
    return load_yaml_text(data, str(path), allowed)
