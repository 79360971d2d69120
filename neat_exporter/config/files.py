"""Reading configuration files (the exporter's and the bridge's YAML, neat.conf, the web config,
secret files) as hostile input: bounded in size, YAML bounded in depth and alias expansion.

PyYAML builds aliases as shared references, which code walking the result (copies, checks,
printing) expands: a few hundred bytes of nested aliases become billions of values. Its composer
recurses once per nesting level, so thousands of ``[`` end in a RecursionError. And reading a
path that is a link to ``/dev/zero`` never ends. Here the file must be a regular file (a link to
one is fine: Kubernetes mounts ConfigMaps and Secrets as links) of at most
:data:`MAX_CONFIG_BYTES`, and its YAML at most :data:`MAX_DEPTH` levels deep and
:data:`MAX_VALUES` values once aliases are expanded, checked before anything is built from it.

Errors name the file, the line and column and PyYAML's problem, never the text around it: the
line could be part of a private key or a password.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import yaml

from neat_exporter.errors import ConfigError

MAX_CONFIG_BYTES = 1 << 20
"""A configuration, with inline certificates, is a few KiB."""
MAX_DEPTH = 32
"""Nesting levels of a YAML document; the configurations need fewer than ten."""
MAX_VALUES = 100_000
"""Scalars, lists and mappings of a YAML document with its aliases expanded."""


def read_config_file(path: str | os.PathLike, key: str) -> str:
    """The text of the regular file ``path`` (UTF-8); ConfigError(``key``) otherwise."""
    try:
        # O_NONBLOCK: opening a named pipe must not wait for a writer; refused just below.
        handle = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise ConfigError(key, f"cannot read {path}: no such file") from None
    except OSError as error:
        raise ConfigError(key, f"cannot read {path}: {error.strerror or error}") from None
    try:
        kind = os.fstat(handle).st_mode
        if not stat.S_ISREG(kind):
            what = "a folder" if stat.S_ISDIR(kind) else "a device, pipe or socket"
            raise ConfigError(key, f"cannot read {path}: not a regular file ({what})")
        with os.fdopen(handle, "rb", closefd=False) as file:
            data = file.read(MAX_CONFIG_BYTES + 1)
    except OSError as error:
        raise ConfigError(key, f"cannot read {path}: {error.strerror or error}") from None
    finally:
        os.close(handle)
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(key, f"{path}: larger than {MAX_CONFIG_BYTES // 1024} KiB")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(key, f"{path}: not a text file (UTF-8)") from None


def load_yaml_file(path: str | os.PathLike, key: str) -> Any:
    """:func:`read_config_file` then :func:`parse_yaml`."""
    return parse_yaml(read_config_file(path, key), str(Path(path)), key)


def parse_yaml(text: str, origin: str, key: str) -> Any:
    """The YAML document ``text`` as plain Python values (PyYAML's safe loader), within the
    bounds above; ConfigError(``key``) naming ``origin`` otherwise."""
    try:
        loader = _BoundedLoader(text)
    except yaml.reader.ReaderError as error:  # a control character: its code, not the text
        raise ConfigError(key, f"{origin}: not valid YAML: {error.reason}") from None
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_expansion(node, origin, key)
        return loader.construct_document(node)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = error.problem or error.context or "unreadable"
        raise ConfigError(key, f"{origin}: not valid YAML{where}: {problem}") from None
    except yaml.YAMLError as error:  # no position: nothing of the text in it either
        raise ConfigError(key, f"{origin}: not valid YAML: {type(error).__name__}") from None
    finally:
        loader.dispose()


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing nesting deeper than :data:`MAX_DEPTH` as it scans (flow
    collections) and as it composes (any)."""

    def __init__(self, text: str):
        super().__init__(text)
        self._depth = 0

    def fetch_flow_collection_start(self, token_class: type) -> None:
        # The scanner reads ahead up to a thousand unclosed "[" before the composer sees the
        # first: stop there at once rather than seconds later.
        if self.flow_level >= MAX_DEPTH:
            raise yaml.scanner.ScannerError(
                None, None, f"nested deeper than {MAX_DEPTH} levels", self.get_mark()
            )
        super().fetch_flow_collection_start(token_class)

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise yaml.composer.ComposerError(
                    None,
                    None,
                    f"nested deeper than {MAX_DEPTH} levels",
                    self.peek_event().start_mark,
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _check_expansion(root: yaml.Node, origin: str, key: str) -> None:
    """ConfigError when ``root`` with its aliases expanded holds more than :data:`MAX_VALUES`
    values, is deeper than :data:`MAX_DEPTH` (aliases of aliases nest without nesting in the
    text), or holds itself. Each node is visited once (aliases are shared nodes), so this costs
    as much as the text, not as its expansion."""
    sizes: dict[int, int] = {}  # node id -> values in it, expanded
    depths: dict[int, int] = {}
    open_nodes: set[int] = set()  # on the path from the root: meeting one again is a cycle
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        children = _children(node)
        if children_done:
            open_nodes.discard(id(node))
            sizes[id(node)] = size = 1 + sum(sizes[id(child)] for child in children)
            depths[id(node)] = depth = 1 + max((depths[id(child)] for child in children), default=0)
            if size > MAX_VALUES:
                raise ConfigError(key, f"{origin}: aliases expand to more than {MAX_VALUES} values")
            if depth > MAX_DEPTH:
                raise ConfigError(
                    key, f"{origin}: aliases make it nested deeper than {MAX_DEPTH} levels"
                )
            continue
        if id(node) in sizes:
            continue
        open_nodes.add(id(node))
        stack.append((node, True))
        for child in children:
            if id(child) in open_nodes:
                line = child.start_mark.line + 1
                raise ConfigError(key, f"{origin}: an alias refers to itself (line {line})")
            if id(child) not in sizes:
                stack.append((child, False))


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [item for pair in node.value for item in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []
