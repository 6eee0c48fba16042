"""Policy conditions as CEL expressions (cel-python), compiled once and evaluated safely (no `eval`).

It sits with the models (it imports nothing of the fabric's): a policy document compiles its
conditions when it is validated (models/policy.py), and the engine (policies/engine.py) evaluates
them; neither imports upward.

Conditions read `on_prem_utilization`, `cloud_utilization`, `pool_health`, `attempt`, `workload.*`
(with `workload.estimated_cost`), `team.*` (`team.budget_remaining`) and `pool.*`. The health
names (`healthy`, `degraded`, `unhealthy`, `cordoned`) are bound as constants, so
`pool_health != healthy` reads as written in a policy file.

Evaluation is memoized on the values an expression actually reads: placement evaluates the same
rules for many pools and workloads whose relevant fields repeat, and a CEL program is a pure
function of those values. That keeps a decision over 100 pools and 20 rules well under a millisecond.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any

import celpy
from celpy import celtypes
from celpy.evaluation import CELEvalError, bool_eq, bool_ne

HEALTH_CONSTANTS = ("healthy", "degraded", "unhealthy", "cordoned")
KNOWN_ROOTS = {"on_prem_utilization", "cloud_utilization", "pool_health", "attempt", "workload", "pool", "team",
               *HEALTH_CONSTANTS}
_CEL_KEYWORDS = {"true", "false", "null", "in", "has", "size", "int", "uint", "double", "string", "bool",
                 "bytes", "list", "map", "type", "duration", "timestamp", "matches", "exists", "all",
                 "exists_one", "filter"}
_STRING_LITERAL = re.compile(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"")
_PATH = re.compile(r"(?<![\w.])([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)(\s*\()?")
# Comprehension macros bind a local variable: `workload.gpu_types.exists(t, t == 'H100')`.
_MACRO_VARIABLE = re.compile(r"\.\s*(?:all|exists|exists_one|map|filter)\s*\(\s*([A-Za-z_]\w*)\s*,")
_MISSING = object()
# The interpreted runner: cel-python's compiled runner mishandles `has(x) && x == ...` short-circuits.
_ENV = celpy.Environment()
logging.getLogger("celpy").setLevel(logging.CRITICAL)


class ExpressionError(ValueError):
    """A policy condition that does not compile, or names a variable the fabric does not provide."""


def _referenced_paths(text: str) -> tuple[tuple[str, ...], ...]:
    """Dotted variable paths an expression reads (`workload.labels.residency`), for the memo key."""
    paths: set[tuple[str, ...]] = set()
    # Comprehension variables (`x` in `list.exists(x, x > 1)`) are local: not part of the key.
    stripped = _STRING_LITERAL.sub("''", text)
    for match in _PATH.finditer(stripped):
        parts = match.group(1).split(".")
        if match.group(2):  # a call: `has(...)`, `x.startsWith(...)` -> drop the function name
            parts = parts[:-1]
        if parts and parts[0] in KNOWN_ROOTS:
            paths.add(tuple(parts))
    return tuple(sorted(paths))


def _unknown_roots(text: str) -> set[str]:
    stripped = _STRING_LITERAL.sub("''", text)
    local = set(_MACRO_VARIABLE.findall(stripped))
    roots = set()
    for match in _PATH.finditer(stripped):
        root = match.group(1).split(".")[0]
        if match.group(2) and "." not in match.group(1):
            continue  # a global function call such as size(...)
        if root not in KNOWN_ROOTS and root not in _CEL_KEYWORDS and root not in local:
            roots.add(root)
    return roots


def _strict(compare: Any) -> Any:
    """CEL semantics for == and != on an error operand: the error propagates.

    cel-python's own operators compare an error as unequal to everything, so `workload.labels.x !=
    'eu'` with no label `x` would be true (and `== 'eu'` false) without reporting anything. With
    this, a condition over a missing label is an evaluation error and counts as false, as
    documented, whichever comparison it uses (`has(...)` and `||`/`&&` still absorb errors as in CEL).
    """

    def strict(left: Any, right: Any) -> Any:
        if isinstance(left, CELEvalError):
            return left
        if isinstance(right, CELEvalError):
            return right
        return compare(left, right)

    return strict


_FUNCTIONS = {"_==_": _strict(bool_eq), "_!=_": _strict(bool_ne)}


def _freeze(value: Any) -> Any:
    """A hashable memo-key form of a variable's value.

    Numbers carry their type: 1, 1.0 and True hash alike in Python but are different CEL values.
    """
    kind = type(value)
    if kind is str or value is None:
        return value
    if kind is int or kind is float or kind is bool:
        return (kind, value)
    if isinstance(value, Mapping):
        return (dict, tuple(sorted((k, _freeze(v)) for k, v in value.items())))
    if isinstance(value, list | tuple):
        return (list, tuple(_freeze(v) for v in value))
    return value


def _resolve(variables: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = variables
    for part in path:
        if isinstance(value, dict):  # the common case, without an ABC check
            value = value.get(part, _MISSING)
            if value is _MISSING:
                return _MISSING
        elif isinstance(value, Mapping) and part in value:
            value = value[part]
        else:
            return _MISSING
    return _freeze(value)


def _first_message(error: BaseException) -> str:
    """CEL errors nest (message, type, args); the innermost message is the readable one."""
    current: Any = error
    while isinstance(current, BaseException | tuple) and (
        current.args if isinstance(current, BaseException) else current
    ):
        head = current.args[0] if isinstance(current, BaseException) else current[0]
        if isinstance(head, str):
            return head
        current = head
    return str(error)


class Expression:
    """A compiled condition. Call `evaluate(variables)` with plain Python values."""

    MEMO_SIZE = 4096

    def __init__(self, text: str, program: Any, paths: tuple[tuple[str, ...], ...]) -> None:
        self.text = text
        self._program = program
        self._paths = paths
        self._roots = frozenset(path[0] for path in paths)
        self._memo: dict[tuple[Any, ...], tuple[bool, str | None]] = {}
        self._bound_memo: dict[tuple[Any, ...], bool] = {}
        self.reads_pool = "pool" in self._roots

    def evaluate(self, variables: Mapping[str, Any]) -> tuple[bool, str | None]:
        """(result, error). An expression that fails at run time (e.g. a missing label) counts as false."""
        key = tuple([_resolve(variables, path) for path in self._paths])
        cached = self._memo.get(key)
        if cached is not None:
            return cached
        outcome = self._run(variables)
        if len(self._memo) >= self.MEMO_SIZE:
            self._memo.clear()  # bounded; a fleet's working set of distinct keys is far smaller
        self._memo[key] = outcome
        return outcome

    def bind(self, variables: Mapping[str, Any], name: str = "pool") -> Callable[[Mapping[str, Any]], bool]:
        """For a condition evaluated once per pool: fix every variable but `name` now.

        `bind(variables)(pool_vars)[0]` equals `evaluate({**variables, name: pool_vars})[0]`, memoized
        on the same values, but the part of the key that does not depend on the pool is resolved
        once per decision instead of once per pool.
        """
        own = [path[1:] for path in self._paths if path[0] == name]
        base = tuple([_resolve(variables, path) for path in self._paths if path[0] != name])
        memo = self._bound_memo

        def evaluate(value: Mapping[str, Any]) -> bool:
            key = (*base, *[_resolve(value, path) for path in own])
            cached = memo.get(key)
            if cached is None:
                cached = self._run({**variables, name: value})[0]
                if len(memo) >= self.MEMO_SIZE:
                    memo.clear()
                memo[key] = cached
            return cached

        return evaluate

    def clear_memo(self) -> None:
        self._memo.clear()
        self._bound_memo.clear()

    def _run(self, variables: Mapping[str, Any]) -> tuple[bool, str | None]:
        # Only the variables the expression names are converted (the key covers exactly those).
        activation = {name: celpy.json_to_cel(value) for name, value in variables.items()
                      if value is not None and name in self._roots}
        for constant in HEALTH_CONSTANTS:
            activation[constant] = celtypes.StringType(constant)
        try:
            result = self._program.evaluate(activation)
        except Exception as error:  # celpy raises several error types for bad data
            return False, f"{self.text!r} could not be evaluated: {_first_message(error)}"
        if isinstance(result, celpy.CELEvalError):
            return False, f"{self.text!r} could not be evaluated: {_first_message(result)}"
        if not isinstance(result, celtypes.BoolType | bool):
            return False, f"{self.text!r} is not a true/false condition (gave {result!r})"
        return bool(result), None


def _syntax_message(text: str, error: BaseException) -> str:
    column = getattr(error, "column", None)
    line = getattr(error, "line", None)
    if not isinstance(column, int):
        # cel-python also reports the text with a caret under the position of the problem.
        lines = str(error).rstrip("\n").splitlines()
        column = lines[1].index("^") + 1 if len(lines) > 1 and "^" in lines[1] else None
    if isinstance(column, int) and column > 0:
        lines = text.splitlines() or [text]
        where = f"line {line}, column {column}" if len(lines) > 1 and line else f"column {column}"
        found = lines[(line or 1) - 1][column - 1:column] if (line or 1) <= len(lines) else ""
        return f"syntax error at {where}" + (f" (near {found!r})" if found.strip() else "")
    message = str(error).strip()
    return message.splitlines()[0] if message else type(error).__name__


@lru_cache(maxsize=1024)
def compile_expression(text: str, where: str = "condition") -> Expression:
    """Compile once (cached by text); raise ExpressionError with the location in the policy on failure."""
    if not text.strip():
        raise ExpressionError(f"{where}: the condition is empty")
    try:
        ast = _ENV.compile(text)
        program = _ENV.program(ast, functions=_FUNCTIONS)
    except Exception as error:
        raise ExpressionError(f"{where}: cannot parse {text!r}: {_syntax_message(text, error)}") from None
    unknown = _unknown_roots(text)
    if unknown:
        raise ExpressionError(
            f"{where}: {text!r} uses unknown name(s) {', '.join(sorted(unknown))}; "
            f"available: {', '.join(sorted(KNOWN_ROOTS))} (quote strings: 'pii')"
        )
    return Expression(text, program, _referenced_paths(text))
