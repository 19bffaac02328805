"""Safe YAML loading that remembers where every value came from.

Plain ``yaml.safe_load`` is not enough for recipes that teams review and CI reruns:

* it silently keeps the last of two duplicate keys, so a reviewer reads one value and MAST gets
  another; here a duplicate key is an error;
* it reports no positions after loading, so a validation error could not name a line; here every
  key and value keeps its line and column;
* an "alias bomb" (nested anchors that expand exponentially) exhausts memory when the data is
  walked; here the expanded size is measured on the node graph, before anything is expanded;
* only YAML's standard tags are accepted, so ``!!python/...`` never reaches a constructor.

The public entry point is :func:`load_yaml`. It raises :class:`~mastpipe.errors.RecipeError`
for every problem, each with file, line and column.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import Problem, RecipeError

#: The largest number of nodes a document may expand to once aliases are followed. Real recipes
#: have a few hundred; an alias bomb has billions.
MAX_EXPANDED_NODES = 100_000
#: Recipes are small; refusing huge files early keeps memory bounded whatever they contain.
MAX_FILE_BYTES = 1_000_000

_SAFE_TAGS = {
    "tag:yaml.org,2002:str",
    "tag:yaml.org,2002:int",
    "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:bool",
    "tag:yaml.org,2002:null",
    "tag:yaml.org,2002:timestamp",
    "tag:yaml.org,2002:map",
    "tag:yaml.org,2002:seq",
    "tag:yaml.org,2002:merge",
}

Path_ = tuple[str | int, ...]


@dataclass
class Located:
    """A loaded document and the 1-based (line, column) of each key and value in it."""

    data: Any
    file: str
    values: dict[Path_, tuple[int, int]] = field(default_factory=dict)
    keys: dict[Path_, tuple[int, int]] = field(default_factory=dict)

    def where(self, path: Path_, *, key: bool = False) -> tuple[int | None, int | None]:
        """Position of ``path``, or of its nearest located ancestor when it has none itself."""
        table = self.keys if key else self.values
        for cut in range(len(path), -1, -1):
            prefix = tuple(path[:cut])
            if key and prefix in self.keys:
                return self.keys[prefix]
            if prefix in table:
                return table[prefix]
            if prefix in self.values:
                return self.values[prefix]
        return None, None

    def problem(self, path: Path_, message: str, hint: str | None = None, *, key: bool = False) -> Problem:
        line, column = self.where(path, key=key)
        return Problem(self.file, line, column, dotted(path), message, hint)


def dotted(path: Path_) -> str:
    """``("query", "nircam", "criteria")`` -> ``"query.nircam.criteria"``; lists as ``[i]``."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += ("." if text else "") + str(part)
    return text or "<recipe>"


def _mark(node: yaml.Node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


class _Loader(yaml.SafeLoader):
    """A SafeLoader whose only job here is composing nodes and constructing scalars."""


def read_text(path: Path) -> str:
    """Read a recipe file as UTF-8, turning every way this can fail into a located Problem."""
    name = str(path)
    try:
        if path.is_dir():
            raise RecipeError([Problem(name, None, None, "<recipe>", "is a directory, not a recipe file",
                                       "pass the path of a .yaml file inside it")])
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise RecipeError([Problem(name, None, None, "<recipe>",
                                       f"is {size:,} bytes; a recipe is at most {MAX_FILE_BYTES:,}",
                                       "is this really a recipe?")])
        raw = path.read_bytes()
    except FileNotFoundError:
        raise RecipeError([Problem(name, None, None, "<recipe>", "no such file",
                                   "check the path; `mastpipe init` writes a starting recipe")]) from None
    except PermissionError:
        raise RecipeError([Problem(name, None, None, "<recipe>", "permission denied",
                                   "make the file readable for this user")]) from None
    except OSError as exc:
        raise RecipeError([Problem(name, None, None, "<recipe>", f"cannot be read: {exc.strerror}")]) from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        before = raw[: exc.start]
        line = before.count(b"\n") + 1
        column = exc.start - (before.rfind(b"\n") + 1) + 1
        raise RecipeError([Problem(name, line, column, "<recipe>",
                                   f"is not valid UTF-8 (byte 0x{raw[exc.start]:02x})",
                                   "save the file as UTF-8")]) from None


def load_yaml(path: str | os.PathLike[str]) -> Located:
    """Load one YAML document safely, with positions.

    Parameters
    ----------
    path : path-like
        The recipe file.

    Returns
    -------
    Located
        The data (dicts, lists, scalars) and the position of every key and value.

    Raises
    ------
    RecipeError
        For a missing or unreadable file, invalid UTF-8, YAML syntax errors (tabs included),
        more than one document, non-standard tags, duplicate keys, non-text keys and alias bombs.
    """
    path = Path(path)
    return load_yaml_text(read_text(path), str(path))


def load_yaml_text(text: str, name: str) -> Located:
    """Like :func:`load_yaml`, for text already read; ``name`` is used in messages."""
    loader = _Loader(text)
    try:
        root = loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        raise RecipeError([_syntax_problem(exc, name)]) from None
    except yaml.YAMLError as exc:  # pragma: no cover - PyYAML raises marked errors for text input
        raise RecipeError([Problem(name, None, None, "<recipe>", f"invalid YAML: {exc}")]) from None
    finally:
        loader.dispose()
    if root is None:
        raise RecipeError([Problem(name, None, None, "<recipe>", "the file is empty",
                                   "a recipe needs at least `version`, `name`, `query` and `retrieve`")])
    located = Located(None, name)
    _check_size(root, located)
    located.data = _construct(root, (), located, _Loader(""))
    return located


def _syntax_problem(exc: yaml.MarkedYAMLError, name: str) -> Problem:
    mark = exc.problem_mark or exc.context_mark
    line, column = (mark.line + 1, mark.column + 1) if mark else (None, None)
    problem = exc.problem or "invalid YAML"
    if "'\\t'" in problem or "\t" in problem:
        return Problem(name, line, column, "<recipe>", "a tab character is used for indentation",
                       "YAML indents with spaces only; replace the tab with spaces")
    if "expected a single document" in (exc.context or "") or "single document" in problem:
        return Problem(name, line, column, "<recipe>", "the file holds more than one YAML document",
                       "a recipe is one document: remove the extra `---`")
    context = f" ({exc.context})" if exc.context else ""
    return Problem(name, line, column, "<recipe>", f"invalid YAML: {problem}{context}",
                   "check indentation, colons and quotes around this place")


def _check_size(root: yaml.Node, located: Located) -> None:
    """Reject documents whose aliases expand past MAX_EXPANDED_NODES, without expanding them."""
    sizes: dict[int, int] = {}
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if id(node) in sizes:
            continue
        children = _children(node)
        if not children_done:
            stack.append((node, True))
            stack.extend((child, False) for child in children if id(child) not in sizes)
            continue
        sizes[id(node)] = 1 + sum(sizes.get(id(child), 1) for child in children)
        if sizes[id(node)] > MAX_EXPANDED_NODES:
            line, column = _mark(node)
            raise RecipeError([Problem(located.file, line, column, "<recipe>",
                                       f"aliases expand to more than {MAX_EXPANDED_NODES:,} values",
                                       "this looks like an alias bomb; write the values out instead")])


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _construct(node: yaml.Node, path: Path_, located: Located, loader: _Loader) -> Any:
    located.values.setdefault(path, _mark(node))
    if node.tag not in _SAFE_TAGS:
        line, column = _mark(node)
        raise RecipeError([Problem(located.file, line, column, dotted(path),
                                   f"the tag {node.tag.replace('tag:yaml.org,2002:', '!!')!r} is not allowed",
                                   "recipes are plain data and nothing in them executes: remove the tag")])
    if isinstance(node, yaml.ScalarNode):
        try:
            return loader.construct_object(node, deep=True)
        except (yaml.constructor.ConstructorError, ValueError) as exc:
            line, column = _mark(node)
            raise RecipeError([Problem(located.file, line, column, dotted(path),
                                       f"cannot read this value: {exc}")]) from None
    if isinstance(node, yaml.SequenceNode):
        return [_construct(child, path + (i,), located, loader) for i, child in enumerate(node.value)]
    assert isinstance(node, yaml.MappingNode)
    explicit = sum(1 for key_node, _ in node.value if key_node.tag != "tag:yaml.org,2002:merge")
    try:
        loader.flatten_mapping(node)  # applies YAML merge keys (`<<: *defaults`), merged pairs first
    except yaml.constructor.ConstructorError as exc:
        line, column = _mark(node)
        raise RecipeError([Problem(located.file, line, column, dotted(path), f"invalid merge: {exc.problem}")]) from None
    n_merged = len(node.value) - explicit
    result: dict[str, Any] = {}
    first_seen: dict[str, int] = {}
    for index, (key_node, value_node) in enumerate(node.value):
        key = loader.construct_object(key_node, deep=True) if isinstance(key_node, yaml.ScalarNode) else None
        line, column = _mark(key_node)
        if not isinstance(key, str):
            raise RecipeError([Problem(located.file, line, column, dotted(path),
                                       f"the key {key!r} is not text",
                                       "quote it: YAML reads yes/no/on/off as booleans and digits as numbers")])
        if index >= n_merged:  # merged values may be overridden; explicit duplicates may not
            if key in first_seen:
                raise RecipeError([Problem(located.file, line, column, dotted(path + (key,)),
                                           f"duplicate key {key!r} (first at line {first_seen[key]})",
                                           "YAML would silently keep only the last one: remove or rename one")])
            first_seen[key] = line
        located.keys[path + (key,)] = (line, column)
        located.values.pop(path + (key,), None)
        result[key] = _construct(value_node, path + (key,), located, loader)
    return result
