"""The one way the fabric reads YAML: PyYAML's safe loader with limits on what a document may cost.

A YAML file is input from anyone who may run `fabric submit`, so reading one must end quickly and in
little memory whatever it holds. Plain `yaml.safe_load` does not: a 395-byte "billion laughs" file
(aliases of aliases) expands to a billion nodes once something walks it, and a document nested a
few thousand levels deep ends in a RecursionError (a traceback, not an error message). Here:

- the text is at most MAX_BYTES (256 KiB; specs, pools and policies are a few KB);
- collections nest at most MAX_DEPTH (64) levels;
- aliases may add at most MAX_ALIAS_NODES nodes in all (each alias counts the nodes of what it
  repeats, aliases inside it included), which anchors for shared settings never come near;
- any failure is a `FileError`: one line naming the source and the reason (the CLI prints it and
  exits 2).

The parsing itself is PyYAML's (its safe loader, on libyaml when built with it): the limits are
checked on its parse events, before any node is composed or object constructed.
"""

from __future__ import annotations

from typing import Any

import yaml

MAX_BYTES = 256 * 1024  # specs, pools and policies are a few KB; the cap bounds the parse (~3 s at worst)
MAX_DEPTH = 64
MAX_ALIAS_NODES = 10_000


class FileError(ValueError):
    """A file that cannot be read or does not describe what it should (exit code 2 in the CLI)."""


class _Limit(yaml.YAMLError):
    """A limit of this module was passed (raised inside the loader, turned into a FileError)."""


# libyaml (C) when PyYAML has it: the pure-Python scanner is quadratic on long flow collections
# (a 1 MiB `[1,1,...]` took a minute); the fallback keeps the same limits, only slower.
_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _line(event: yaml.Event) -> str:
    mark = event.start_mark
    return f" (line {mark.line + 1})" if mark is not None else ""


def _check_limits(text: str) -> None:
    """Walk the document's parse events once (PyYAML's parser, no objects built): nesting depth, and
    how many nodes the aliases would add once expanded (each alias counts the whole of what it repeats,
    aliases inside that included). Raises _Limit before anything is composed or constructed."""
    anchors: dict[str, int] = {}  # anchor -> its node's size with aliases expanded
    stack: list[tuple[str | None, int]] = []  # open collections: (anchor, size so far)
    alias_nodes = 0

    def close(anchor: str | None, size: int) -> None:
        if anchor is not None:
            anchors[anchor] = size
        if stack:
            open_anchor, open_size = stack[-1]
            stack[-1] = (open_anchor, open_size + size)

    for event in yaml.parse(text, Loader=_Loader):
        if isinstance(event, yaml.DocumentStartEvent):
            anchors.clear()  # anchors do not cross documents
        elif isinstance(event, yaml.CollectionStartEvent):
            if len(stack) >= MAX_DEPTH:
                raise _Limit(f"nested more than {MAX_DEPTH} levels deep{_line(event)}")
            stack.append((event.anchor, 1))
        elif isinstance(event, yaml.CollectionEndEvent):
            anchor, size = stack.pop()
            close(anchor, size)
        elif isinstance(event, yaml.ScalarEvent):
            close(event.anchor, 1)
        elif isinstance(event, yaml.AliasEvent):
            size = anchors.get(event.anchor or "", 1)  # an unknown anchor: the loader reports it
            alias_nodes += size
            if alias_nodes > MAX_ALIAS_NODES:
                raise _Limit(f"aliases expand to more than {MAX_ALIAS_NODES:,} nodes{_line(event)}; "
                             "write the values out or use fewer aliases")
            close(None, size)


def load_all(text: str | bytes, source: str = "the document") -> list[Any]:
    """Every YAML document in `text` (None for an empty one), within the limits; FileError otherwise."""
    if isinstance(text, bytes):
        try:
            text = text.decode()
        except UnicodeDecodeError:
            raise FileError(f"{source}: not UTF-8 text") from None
    if len(text) > MAX_BYTES or len(text.encode(errors="replace")) > MAX_BYTES:
        raise FileError(f"{source}: larger than {MAX_BYTES // 1024} KiB (a spec, pool or policy file is a few KB)")
    try:
        _check_limits(text)
        return list(yaml.load_all(text, Loader=_Loader))  # a SafeLoader (CSafeLoader when built)
    except _Limit as error:
        raise FileError(f"{source}: refused: {error}") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise FileError(f"{source}: not valid YAML{where}: {problem}") from None
    except (ValueError, OverflowError, RecursionError) as error:
        # A scalar the constructor cannot make (an integer of more digits than Python converts, a bad
        # date), or a structure deeper than the interpreter goes: a bad document, said in one line.
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise FileError(f"{source}: not valid YAML: {message}") from None


def load(text: str | bytes, source: str = "the document") -> Any:
    """The one YAML document in `text` (None when it is empty), within the limits; FileError otherwise."""
    documents = load_all(text, source)
    if len(documents) > 1:
        raise FileError(f"{source}: expected one YAML document, found {len(documents)}")
    return documents[0] if documents else None
