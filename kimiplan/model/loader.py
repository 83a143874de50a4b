"""Reading YAML and JSON input files safely: every way a file can be malformed is a named error.

PyYAML's `safe_load` lets a later duplicate key silently replace the first (`model:` twice), expands aliases
without limit (a few KB of nested aliases become gigabytes once anything walks the tree), and raises plain
`ValueError` for a date that does not exist or `RecursionError` for deep nesting. This loader refuses all of
them with the file, line and reason; `json` gets the same checks (duplicate keys, depth, size).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from kimiplan.errors import ConfigError, KimiplanError

MAX_BYTES = 20_000_000  # an input file (scenarios are a few KB; inline samples may make them larger)
MAX_DEPTH = 64  # nesting of mappings and lists
MAX_NODES = 1_000_000  # values after expanding aliases: an alias bomb passes this within a few levels


# libyaml's parser when present (several times faster; the constructor above it is Python either way).
_Base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_Base):
    """SafeLoader that refuses duplicate keys and turns impossible dates into errors with a line."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            # The node's own keys only: keys a merge (<<: *base) brings in may be overridden, as YAML intends.
            seen: dict[Any, Any] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(key_node, yaml.ScalarNode):
                    continue
                key = self.construct_object(key_node, deep=deep)
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        f"while constructing a mapping (first {key!r} on line {seen[key].line + 1})",
                        node.start_mark,
                        f"found duplicate key {key!r}",
                        key_node.start_mark,
                    )
                seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_timestamp(self, node):
        try:
            return super().construct_yaml_timestamp(node)
        except (ValueError, OverflowError) as exc:
            raise yaml.constructor.ConstructorError(
                None, None, f"{node.value!r} is not a valid date or time ({exc})", node.start_mark
            ) from None


_Loader.add_constructor("tag:yaml.org,2002:timestamp", _Loader.construct_yaml_timestamp)
_Loader.add_constructor("tag:yaml.org,2002:map", _Loader.construct_yaml_map)


def _shared_nodes(root) -> set[int]:
    """Nodes the composed graph reaches more than once (an anchor and its aliases), walked without expanding."""
    seen: set[int] = set()
    shared: set[int] = set()
    stack = [root]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            shared.add(id(node))
            continue
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                stack += [k, v]
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)
    return shared


def _line(node) -> int | str:
    return node.start_mark.line + 1 if node is not None and node.start_mark else "?"


def _check_node_tree(root, origin: str, error) -> None:
    """Walk the composed node graph as the tree it will become (aliases expanded), iteratively, and stop as
    soon as it is too deep or too large, naming the line where it starts: the anchor whose aliases expand
    past the limit, or the line of the too-deep value."""
    shared = _shared_nodes(root)
    stack = [(root, 1, None)]
    count = 0
    while stack:
        node, depth, anchor = stack.pop()
        count += 1
        if count > MAX_NODES:
            where = (
                f"; the expansion starts on line {_line(anchor[1])}, whose aliases repeat the anchor on line "
                f"{_line(anchor[0])}"
                if anchor is not None
                else ""
            )
            raise error(
                f"{origin}: too many values once aliases are expanded (more than {MAX_NODES:,}){where}; "
                "an alias bomb or a file far larger than any scenario"
            )
        if depth > MAX_DEPTH:
            raise error(f"{origin}: nested more than {MAX_DEPTH} levels deep (line {_line(node)})")
        children = []
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                children += [k, v]
        elif isinstance(node, yaml.SequenceNode):
            children = node.value
        for c in children:
            # The outermost anchor on the way down is where the expansion starts.
            stack.append((c, depth + 1, anchor if anchor is not None or id(c) not in shared else (c, node)))


def _text_depth_line(text: str) -> tuple[int, int] | None:
    """(line, column) where bracket nesting first passes MAX_DEPTH in JSON or flow-style YAML text (strings
    skipped), or None."""
    depth, line, col, in_str, esc, quote = 0, 1, 0, False, False, ""
    for ch in text:
        col += 1
        if ch == "\n":
            line, col = line + 1, 0
            continue
        if in_str:
            if esc:
                esc = False
            elif ch == "\\" and quote == '"':
                esc = True
            elif ch == quote:
                in_str = False
            continue
        if ch in "\"'":
            in_str, quote = True, ch
        elif ch in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                return line, col
        elif ch in "]}":
            depth -= 1
    return None


def _too_deep(text: str, origin: str) -> str:
    at = _text_depth_line(text)
    where = f" (line {at[0]}, column {at[1]})" if at else ""
    return f"{origin}: nested more than {MAX_DEPTH} levels deep{where}"


def _json_depth_ok(obj: Any, origin: str, error, text: str = "") -> None:
    stack = [(obj, 1)]
    while stack:
        o, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise error(_too_deep(text, origin))
        if isinstance(o, dict):
            stack.extend((v, depth + 1) for v in o.values())
        elif isinstance(o, list):
            stack.extend((v, depth + 1) for v in o)


def _no_duplicates(pairs):
    out = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate key {k!r}")
        out[k] = v
    return out


def parse_text(text: str, origin: str, fmt: str = "yaml", error: type[KimiplanError] = ConfigError) -> Any:
    """Parse YAML (`fmt="yaml"`) or JSON text; any malformation is an `error` (ConfigError) naming `origin`."""
    if fmt == "json":
        try:
            data = json.loads(text, object_pairs_hook=_no_duplicates)
        except ValueError as exc:  # JSONDecodeError or a duplicate key
            raise error(f"{origin}: not valid JSON: {exc}") from None
        except RecursionError:
            raise error(_too_deep(text, origin)) from None
        _json_depth_ok(data, origin, error, text)
        return data
    loader = _Loader(text)
    try:
        try:
            node = loader.get_single_node()
        except RecursionError:
            raise error(_too_deep(text, origin)) from None
        if node is None:
            return None
        _check_node_tree(node, origin, error)
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        # Marks in the message name the file, not "<unicode string>".
        raise error(f"{origin}: not valid YAML: {str(exc).replace('<unicode string>', origin)}") from None
    finally:
        loader.dispose()


def read_text(path: str | Path, what: str = "file", error: type[KimiplanError] = ConfigError) -> str:
    """A UTF-8 text file of bounded size; unreadable, too large or not UTF-8 is an `error`."""
    p = Path(path)
    try:
        with open(p, "rb") as fh:
            raw = fh.read(MAX_BYTES + 1)
    except OSError as exc:
        raise error(f"cannot read {what} {str(p)!r}: {exc.strerror}") from None
    if len(raw) > MAX_BYTES:
        raise error(f"{what} {str(p)!r} is larger than {MAX_BYTES:,} bytes")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise error(
            f"{what} {str(p)!r}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start}, line {line})"
        ) from None


def load_file(path: str | Path, what: str = "file", error: type[KimiplanError] = ConfigError) -> Any:
    """Read and parse a YAML or JSON file (by suffix; JSON is also valid YAML, but JSON gets JSON's errors)."""
    p = Path(path)
    fmt = "json" if p.suffix.lower() == ".json" else "yaml"
    return parse_text(read_text(p, what, error), str(p), fmt, error)
