"""Safe YAML loading that remembers where every value came from.

Plain ``yaml.safe_load`` is not enough for recipes that teams review and CI reruns:

* it silently keeps the last of two duplicate keys, so a reviewer reads one value and MAST gets
  another; here a duplicate key is an error;
* it reports no positions after loading, so a validation error could not name a line; here every
  key and value keeps its line and column;
* an "alias bomb" (nested anchors that expand exponentially) exhausts memory when the data is
  walked; here the expanded size is measured on the node graph, before anything is expanded,
  and recursive aliases and deep nesting are refused the same way;
* only YAML's standard tags are accepted, on keys as on values, so ``!!python/...`` never
  reaches a constructor;
* dates stay text (``2024-01-31``): the fields that take dates convert them, with their own
  messages, and everywhere else the value is what the author wrote.

The public entry point is :func:`load_yaml`. It raises :class:`~mastpipe.errors.RecipeError`
for every problem, each with file, line and column.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mastpipe.errors import Problem, RecipeError

#: The largest number of nodes a document may expand to once aliases are followed. Real recipes
#: have a few hundred; an alias bomb has billions.
MAX_EXPANDED_NODES = 100_000
#: Recipes are small; refusing huge files early keeps memory bounded whatever they contain.
MAX_FILE_BYTES = 1_000_000
#: The deepest nesting accepted. Real recipes nest five levels; PyYAML's composer and the
#: constructor below are recursive, so this also keeps Python's stack safe.
MAX_DEPTH = 64

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


__all__ = [
    "MAX_DEPTH", "MAX_EXPANDED_NODES", "MAX_FILE_BYTES", "Located", "Path_", "dotted", "load_yaml",
    "load_yaml_text", "read_text"
]


@dataclass
class Located:
    """A loaded document and the 1-based (line, column) of each key and value in it.

    ``texts`` keeps the source text of every value YAML did not read as text (``NO`` for False,
    ``~`` or ``""`` for None, ``0x10`` for 16), so messages can quote what the author wrote.
    """

    data: Any
    file: str
    values: dict[Path_, tuple[int, int]] = field(default_factory=dict)
    keys: dict[Path_, tuple[int, int]] = field(default_factory=dict)
    texts: dict[Path_, str] = field(default_factory=dict)

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
        with path.open("rb") as stream:  # bounded read: a FIFO or /dev/zero cannot exhaust memory
            raw = stream.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise RecipeError([Problem(name, None, None, "<recipe>", "no such file",
                                   "check the path; a shell pattern that matches nothing is passed on "
                                   "unexpanded")]) from None
    except PermissionError:
        raise RecipeError([Problem(name, None, None, "<recipe>", "permission denied",
                                   "make the file readable for this user")]) from None
    except OSError as exc:
        raise RecipeError([Problem(name, None, None, "<recipe>", f"cannot be read: {exc.strerror or exc}",
                                   "check that the path names a readable file")]) from None
    if len(raw) > MAX_FILE_BYTES:
        raise RecipeError([Problem(name, None, None, "<recipe>",
                                   f"is larger than {MAX_FILE_BYTES:,} bytes, far more than any recipe",
                                   "check that the path names a recipe, not a data file")])
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
        For a missing or unreadable file, invalid UTF-8, control characters, YAML syntax errors
        (tabs included), more than one document, non-standard tags, duplicate keys, non-text keys,
        alias bombs, recursive aliases and nesting deeper than MAX_DEPTH.
    """
    path = Path(path)
    return load_yaml_text(read_text(path), str(path))


def load_yaml_text(text: str, name: str) -> Located:
    """Like :func:`load_yaml`, for text already read; ``name`` is used in messages."""
    try:
        loader = _Loader(text)  # checks every character at once: a reader error is raised here
    except yaml.reader.ReaderError as exc:
        raise RecipeError([_reader_problem(exc, text, name)]) from None
    try:
        root = loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        raise RecipeError([_syntax_problem(exc, name)]) from None
    except RecursionError:
        mark = loader.get_mark()
        raise RecipeError([Problem(name, mark.line + 1, mark.column + 1, "<recipe>",
                                   f"values are nested more than {MAX_DEPTH} levels deep",
                                   "a recipe nests a few levels: look for unclosed [ or { brackets")]) from None
    except yaml.YAMLError as exc:  # pragma: no cover - PyYAML raises marked errors for text input
        raise RecipeError([Problem(name, None, None, "<recipe>", f"invalid YAML: {exc}",
                                   "check the file's syntax")]) from None
    finally:
        loader.dispose()
    if root is None:
        raise RecipeError([Problem(name, None, None, "<recipe>", "the file is empty (or holds only comments)",
                                   "a recipe needs at least `version: 1`, `name` and `query`")])
    located = Located(None, name)
    _check_size(root, located)
    located.data = _construct(root, (), located, _Loader(""), {})
    return located


def _reader_problem(exc: yaml.reader.ReaderError, text: str, name: str) -> Problem:
    before = text[: exc.position]
    line = before.count("\n") + 1
    column = exc.position - (before.rfind("\n") + 1) + 1
    return Problem(name, line, column, "<recipe>",
                   f"the control character U+{exc.character:04X} is not allowed in YAML",
                   "remove it; recipes are plain text")


_SYNTAX_HINTS = (
    ("mapping values are not allowed", "a value containing ': ' must be quoted, or a key is indented too far"),
    ("could not find expected ':'", "a key needs a colon after it, or a line continues a value by mistake"),
    ("expected ',' or ']'", "close the list with ] (or quote a value containing , [ or ])"),
    ("expected ',' or '}'", "close the mapping with } (or quote a value containing , { or })"),
    ("while scanning a quoted scalar", "close the quote: the string runs to the end of the file"),
    ("cannot start any token", "quote the value: YAML reserves @ and ` at the start of a value"),
    ("did not find expected key", "check the indentation: keys of one mapping line up in one column"),
    ("did not find expected '-' indicator", "check the indentation: items of one list line up in one column"),
    ("found undefined alias", "define the anchor (&name) before using the alias (*name)"),
)


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
    problem = problem.replace("'<stream end>'", "the end of the file").replace("end of stream", "end of the file")
    context = ""
    if exc.context:
        context = f" ({exc.context}"
        if exc.context_mark and exc.problem_mark and exc.context_mark.line != exc.problem_mark.line:
            context += f" started at line {exc.context_mark.line + 1}"
        context += ")"
    text = problem + context
    hint = next((advice for phrase, advice in _SYNTAX_HINTS if phrase in text),
                "check indentation, colons and quotes around this place")
    return Problem(name, line, column, "<recipe>", f"invalid YAML: {text}", hint)


def _check_size(root: yaml.Node, located: Located) -> None:
    """Reject alias bombs, recursive aliases and deep nesting, without expanding anything.

    One iterative depth-first pass over the node graph computes, for every node, how many values
    and how many levels it expands to once aliases are followed.
    """
    sizes: dict[int, int] = {}
    depths: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]

    def fail(node: yaml.Node, message: str, hint: str) -> None:
        line, column = _mark(node)
        raise RecipeError([Problem(located.file, line, column, "<recipe>", message, hint)])

    while stack:
        node, children_done = stack.pop()
        if not children_done:
            if id(node) in sizes:
                continue
            on_path.add(id(node))
            stack.append((node, True))
            for child in _children(node):
                if id(child) in on_path:
                    fail(child, "an alias refers to a value that contains it (a recursive structure)",
                         "recipes are trees: write the value out instead of the alias")
                if id(child) not in sizes:
                    stack.append((child, False))
            continue
        on_path.discard(id(node))
        children = _children(node)
        sizes[id(node)] = 1 + sum(sizes[id(child)] for child in children)
        depths[id(node)] = 1 + max((depths[id(child)] for child in children), default=0)
        if sizes[id(node)] > MAX_EXPANDED_NODES:
            fail(node, f"aliases expand to more than {MAX_EXPANDED_NODES:,} values",
                 "this looks like an alias bomb; write the values out instead")
        if depths[id(node)] > MAX_DEPTH:
            fail(node, f"values are nested more than {MAX_DEPTH} levels deep",
                 "a recipe nests a few levels: look for unclosed [ or { brackets")


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _tag_problem(node: yaml.Node, path: Path_, located: Located) -> RecipeError:
    line, column = _mark(node)
    return RecipeError([Problem(located.file, line, column, dotted(path),
                                f"the tag {node.tag.replace('tag:yaml.org,2002:', '!!')!r} is not allowed",
                                "recipes are plain data and nothing in them executes: remove the tag")])


def _scalar(node: yaml.ScalarNode, path: Path_, located: Located, loader: _Loader) -> Any:
    if node.tag == "tag:yaml.org,2002:timestamp":
        # Dates stay text: the fields that take dates convert them (to MJD) with their own checks,
        # and everywhere else 2024-01-31 is just text, as the author wrote it.
        return node.value
    try:
        return loader.construct_object(node, deep=True)
    except Exception:  # PyYAML raises ValueError, KeyError, ... for values that do not fit a tag
        line, column = _mark(node)
        tag = node.tag.replace("tag:yaml.org,2002:", "!!")
        raise RecipeError([Problem(located.file, line, column, dotted(path),
                                   f"cannot read {node.value!r} as {tag}",
                                   f"remove the {tag} tag or write a value it accepts")]) from None


def _construct(node: yaml.Node, path: Path_, located: Located, loader: _Loader,
               merged: dict[int, int]) -> Any:
    """Build plain data from ``node``, recording positions; ``merged`` caches merge-key counts."""
    located.values.setdefault(path, _mark(node))
    if node.tag not in _SAFE_TAGS:
        raise _tag_problem(node, path, located)
    if isinstance(node, yaml.ScalarNode):
        value = _scalar(node, path, located, loader)
        if not isinstance(value, str):
            located.texts[path] = node.value
        return value
    if isinstance(node, yaml.SequenceNode):
        return [_construct(child, path + (i,), located, loader, merged) for i, child in enumerate(node.value)]
    assert isinstance(node, yaml.MappingNode)
    if id(node) not in merged:  # an aliased mapping is flattened once, then reused as it is
        explicit = sum(1 for key_node, _ in node.value if key_node.tag != "tag:yaml.org,2002:merge")
        try:
            loader.flatten_mapping(node)  # applies YAML merge keys (`<<: *defaults`), merged pairs first
        except yaml.constructor.ConstructorError as exc:
            line, column = _mark(node)
            raise RecipeError([Problem(located.file, line, column, dotted(path), f"invalid merge: {exc.problem}",
                                       "`<<:` takes an alias of a mapping (<<: *defaults) or a list of them")]) from None
        merged[id(node)] = len(node.value) - explicit
    n_merged = merged[id(node)]
    result: dict[str, Any] = {}
    first_seen: dict[str, int] = {}
    for index, (key_node, value_node) in enumerate(node.value):
        line, column = _mark(key_node)
        if key_node.tag not in _SAFE_TAGS:
            raise _tag_problem(key_node, path, located)
        if not isinstance(key_node, yaml.ScalarNode):
            kind = "a list" if isinstance(key_node, yaml.SequenceNode) else "a mapping"
            raise RecipeError([Problem(located.file, line, column, dotted(path), f"a key must be text, not {kind}",
                                       "write keys as plain words followed by a colon")])
        key = _scalar(key_node, path, located, loader)
        if not isinstance(key, str):
            raise RecipeError([Problem(located.file, line, column, dotted(path),
                                       f"the key {key_node.value} is not text: YAML reads it as {key!r}",
                                       f"quote it ('{key_node.value}':); YAML reads yes/no/on/off as "
                                       "booleans and digits as numbers")])
        if index >= n_merged:  # merged values may be overridden; explicit duplicates may not
            if key in first_seen:
                raise RecipeError([Problem(located.file, line, column, dotted(path + (key,)),
                                           f"duplicate key {key!r} (first at line {first_seen[key]})",
                                           "YAML would silently keep only the last one: remove or rename one")])
            first_seen[key] = line
        located.keys[path + (key,)] = (line, column)
        located.values.pop(path + (key,), None)
        result[key] = _construct(value_node, path + (key,), located, loader, merged)
    return result
