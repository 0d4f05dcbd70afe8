"""Jinja2 for playbooks: StrictUndefined, lazily rendered variables, Ansible's bare conditions.

Why lazy: play vars may refer to other vars (``dir: "{{ base }}/x"``), and an unused variable that
cannot be rendered must not fail a task that never reads it. Variables are rendered when a
template reads them, through a mapping handed to Jinja as its context parent.
"""

from __future__ import annotations

import functools
import json
import os
import re
import threading
from collections.abc import Iterator, Mapping
from typing import Any

import jinja2
import yaml
from jinja2.sandbox import ImmutableSandboxedEnvironment

from provision.ansible_filters import FILTERS, GLOBALS, TESTS, with_builtin_names
from provision.errors import ConfigError, ProvisionError
from provision.shell import quote
from provision.varparse import to_bool


class TemplateError(ProvisionError):
    """A template cannot be rendered: undefined variable, syntax error, bad filter."""


def _bool(value: Any) -> bool:
    """The ``bool`` filter: Ansible's boolean rule, failing as a template error."""
    try:
        return to_bool(value)
    except ConfigError as exc:
        raise jinja2.TemplateRuntimeError(str(exc)) from None


def _mandatory(value: Any, msg: str | None = None) -> Any:
    if isinstance(value, jinja2.Undefined):
        raise jinja2.UndefinedError(msg or "mandatory variable is undefined")
    return value


def _combine(*dicts: Any, recursive: bool = False) -> dict[str, Any]:
    """Ansible's ``combine``: later mappings win; ``recursive`` merges nested mappings."""
    out: dict[str, Any] = {}
    for d in dicts:
        if not isinstance(d, Mapping):
            raise jinja2.TemplateRuntimeError(f"combine expects mappings, got {type(d).__name__}")
        for key, value in d.items():
            if recursive and isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
                out[key] = _combine(out[key], value, recursive=True)
            else:
                out[key] = value
    return out


def _version_key(text: Any) -> list[tuple[int, Any]]:
    return [(0, int(p)) if p.isdigit() else (1, p) for p in re.split(r"[.\-+~]", str(text)) if p]


_VERSION_OPS = {
    "<": lambda a, b: a < b,
    "lt": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    "le": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    "gt": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
    "ge": lambda a, b: a >= b,
    "==": lambda a, b: a == b,
    "=": lambda a, b: a == b,
    "eq": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    "<>": lambda a, b: a != b,
    "ne": lambda a, b: a != b,
}


def _version(value: Any, other: Any, operator: str = "eq") -> bool:
    """Ansible's ``version`` test (loose comparison: numeric parts compare as numbers)."""
    if operator not in _VERSION_OPS:
        raise jinja2.TemplateRuntimeError(f"version: unknown operator {operator!r}")
    return bool(_VERSION_OPS[operator](_version_key(value), _version_key(other)))


# Where backslashes in Jinja string constants are escaped, as Ansible 2.19 does
# (ansible/_internal/_templating/_jinja_bits.py, AnsibleLexer): a playbook's YAML string has had
# its backslashes processed by YAML already, so in ``"{{ x | regex_replace('(a)', '\\1') }}"`` the
# ``'\1'`` must reach the filter as backslash-one, not as Jinja's escape for chr(1). Ansible does it
# for string constants inside ``{{ }}`` of playbook values, not in ``{% %}`` statements, not in
# template files (the template module and lookup) and not in conditions (``when``).
ESCAPE_NONE, ESCAPE_EXPRESSIONS, ESCAPE_ALL = 0, 1, 2
_ESCAPING = threading.local()


class _AnsibleLexer(jinja2.lexer.Lexer):
    def tokeniter(self, *args: Any, **kwargs: Any) -> Iterator[tuple[int, str, str]]:
        mode = getattr(_ESCAPING, "mode", ESCAPE_NONE)
        inside = False
        for lineno, kind, value in super().tokeniter(*args, **kwargs):
            if kind == jinja2.lexer.TOKEN_VARIABLE_BEGIN:
                inside = True
            elif kind == jinja2.lexer.TOKEN_VARIABLE_END:
                inside = False
            elif kind == jinja2.lexer.TOKEN_STRING and (
                mode == ESCAPE_ALL or (mode == ESCAPE_EXPRESSIONS and inside)
            ):
                value = value.replace("\\", "\\\\")
            yield lineno, kind, value


class _Environment(ImmutableSandboxedEnvironment):
    @property
    def lexer(self) -> jinja2.lexer.Lexer:
        lexer = self.__dict__.get("_provision_lexer")
        if lexer is None:
            lexer = self.__dict__["_provision_lexer"] = _AnsibleLexer(self)
        return lexer


def _make_env() -> jinja2.Environment:
    env = _Environment(
        undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False
    )
    env.filters.update(
        {
            "bool": _bool,
            "quote": quote,
            "to_json": lambda v, **kw: json.dumps(v, **kw),
            "from_json": json.loads,
            "to_yaml": lambda v: yaml.safe_dump(v, default_flow_style=None),
            "from_yaml": yaml.safe_load,
            "basename": os.path.basename,
            "dirname": os.path.dirname,
            "mandatory": _mandatory,
            "combine": _combine,
            "ternary": lambda v, yes, no, none=None: (
                none if v is None and none is not None else (yes if v else no)
            ),
        }
    )
    env.filters.update(FILTERS)
    env.filters.update(with_builtin_names(dict(env.filters)))  # ansible.builtin.<name> too
    tests = {**TESTS, "version": _version, "version_compare": _version}
    env.tests.update(with_builtin_names(tests))
    env.globals.update(GLOBALS)
    return env


ENV = _make_env()


def is_template(value: Any) -> bool:
    return isinstance(value, str) and ("{{" in value or "{%" in value)


_UNDEFINED_RE = re.compile(r"'([^']+)' is undefined")


def _describe(exc: Exception) -> str:
    if isinstance(exc, jinja2.UndefinedError):
        text = str(exc)
        match = _UNDEFINED_RE.search(text)
        if match:
            return f"undefined variable '{match.group(1)}'"
        return f"undefined variable: {text}"
    if isinstance(exc, jinja2.TemplateSyntaxError):
        return f"template syntax error: {exc.message}"
    return f"template error: {exc}"


class Unsafe(str):
    """Text a host gave us (a registered result, a fact) or a value already rendered
    (set_fact): never rendered again as a template, as Ansible's ``AnsibleUnsafeText``. A
    command's output holding ``{{ lookup('pipe', ...) }}`` must not run on the controller."""

    __slots__ = ()


# to_yaml/to_nice_yaml of a registered result: Unsafe is plain text to YAML
yaml.SafeDumper.add_representer(Unsafe, yaml.representer.SafeRepresenter.represent_str)


def unsafe(value: Any) -> Any:
    """``value`` with every string in it marked :class:`Unsafe` (mappings and lists copied)."""
    if isinstance(value, str):
        # plain text only: a vault-decrypted value keeps its own type (masking follows it)
        return Unsafe(value) if type(value) is str else value
    if isinstance(value, dict):
        return {unsafe(k): unsafe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [unsafe(v) for v in value]
    return value


class Vars(Mapping[str, Any]):
    """Merged variables that render template values on access (with a loop guard)."""

    def __init__(self, layers: list[Mapping[str, Any]]) -> None:
        merged: dict[str, Any] = {}
        for layer in layers:  # lowest precedence first
            merged.update(layer)
        self.raw = merged
        self._cache: dict[str, Any] = {}
        self._busy: set[str] = set()

    def __getitem__(self, key: str) -> Any:
        if key in self._cache:
            return self._cache[key]
        if key not in self.raw:
            if key in ENV.globals:
                return ENV.globals[key]
            raise KeyError(key)
        if key in self._busy:
            raise jinja2.TemplateRuntimeError(f"variable '{key}' refers to itself")
        self._busy.add(key)
        try:
            value = _render_value(self.raw[key], self)
        finally:
            self._busy.discard(key)
        self._cache[key] = value
        return value

    def __contains__(self, key: object) -> bool:
        return key in self.raw or key in ENV.globals

    def __iter__(self) -> Iterator[str]:
        return iter(self.raw)

    def __len__(self) -> int:
        return len(self.raw)

    def child(self, extra: Mapping[str, Any]) -> Vars:
        """These variables plus ``extra`` on top (loop ``item``, task vars)."""
        return Vars([self.raw, extra])


def merge_vars(
    inventory: Mapping[str, Any],
    play: Mapping[str, Any],
    runtime: Mapping[str, Any],
    extra: Mapping[str, Any],
    defaults: Mapping[str, Any] | None = None,
) -> Vars:
    """Ansible's precedence, lowest first: play ``defaults`` (like role defaults) < inventory
    (group/host vars) < play vars (and vars_files) < registered results and facts < ``-e``."""
    return Vars([defaults or {}, inventory, play, runtime, extra])


@functools.lru_cache(maxsize=8192)
def _compile(source: str, escaping: int = ESCAPE_NONE) -> jinja2.Template:
    """Compiled once per distinct source and escaping: the same task renders on every host,
    and compiling costs far more than rendering."""
    _ESCAPING.mode = escaping
    try:
        return ENV.from_string(source)
    finally:
        _ESCAPING.mode = ESCAPE_NONE


@functools.lru_cache(maxsize=8192)
def _single_expression(text: str) -> str | None:
    """The expression when ``text`` is exactly one ``{{ }}`` and nothing around it (a trailing
    newline is content, so it counts), as Jinja's own parser sees it (so ``}}`` inside a
    literal such as ``{'a': {'b': 1}}`` is no trap); else None."""
    if not (text.startswith("{{") and text.endswith("}}")):
        return None
    try:
        body = ENV.parse(text).body
    except jinja2.TemplateSyntaxError:
        return None
    if len(body) != 1 or not isinstance(body[0], jinja2.nodes.Output):
        return None
    nodes = body[0].nodes
    if len(nodes) != 1 or isinstance(nodes[0], jinja2.nodes.TemplateData):
        return None
    return text[2:-2].strip("-")


def _evaluate(expr: str, variables: Mapping[str, Any], escaping: int = ESCAPE_NONE) -> Any:
    """The native value of one Jinja expression (a list stays a list, a number a number)."""
    template = _compile("{% set provision_result = (" + expr + ") %}", escaping)
    module = template.make_module(vars=variables, shared=True)  # type: ignore[arg-type]
    value = module.provision_result  # type: ignore[attr-defined]
    if isinstance(value, jinja2.Undefined):
        value._fail_with_undefined_error()  # StrictUndefined: raises, naming the variable
    return value


def _render_string(text: str, variables: Mapping[str, Any]) -> Any:
    expr = _single_expression(text)
    if expr is not None:
        return _evaluate(expr, variables, ESCAPE_ALL)  # the whole of it was inside {{ }}
    expr = _single_expression(text[:-1]) if text.endswith("\n") else None
    if expr is not None:
        # Jinja drops one trailing newline and Ansible gives it back to a string only, so
        # "{{ flag }}\n" is the boolean, "{{ name }}\n" the name and a newline (ansible-core
        # 2.19, measured: tests/test_change_batch.py compares the two)
        value = _evaluate(expr, variables, ESCAPE_ALL)
        if not isinstance(value, str):
            return value
        return Unsafe(value + "\n") if isinstance(value, Unsafe) else value + "\n"
    template = _compile(text, ESCAPE_EXPRESSIONS)
    ctx = template.new_context(vars=variables, shared=True)  # type: ignore[arg-type]
    return jinja2.utils.concat(template.root_render_func(ctx))


def _render_value(value: Any, variables: Mapping[str, Any]) -> Any:
    if isinstance(value, Unsafe):
        return value
    if isinstance(value, str):
        return _render_string(value, variables) if is_template(value) else value
    if isinstance(value, list):
        return [_render_value(v, variables) for v in value]
    if isinstance(value, dict):
        return {_render_value(k, variables): _render_value(v, variables) for k, v in value.items()}
    return value


def render(value: Any, variables: Mapping[str, Any], where: str = "") -> Any:
    """Render strings inside ``value`` (recursively); ``"{{ x }}"`` alone keeps x's type.

    ``where`` ("FILE:LINE: task 'NAME'") prefixes the error, so an undefined variable names the
    task and the variable.
    """
    try:
        return _render_value(value, variables)
    except (jinja2.TemplateError, TypeError, ValueError) as exc:
        raise TemplateError(f"{where}: {_describe(exc)}" if where else _describe(exc)) from None


def render_text(text: str, variables: Mapping[str, Any], where: str = "") -> str:
    """Render a whole template file's text (always a string)."""
    try:
        template = _compile(text)
        ctx = template.new_context(vars=variables, shared=True)  # type: ignore[arg-type]
        return jinja2.utils.concat(template.root_render_func(ctx))
    except (jinja2.TemplateError, TypeError, ValueError) as exc:
        raise TemplateError(f"{where}: {_describe(exc)}" if where else _describe(exc)) from None


def condition(expr: Any, variables: Mapping[str, Any], where: str = "") -> bool:
    """Ansible's ``when``: a bare expression (``x == 1``), a ``{{ }}`` string, a bool, or a
    list whose items must all hold."""
    if isinstance(expr, list):
        return all(condition(e, variables, where) for e in expr)
    if isinstance(expr, bool):
        return expr
    if expr is None:
        return True
    text = str(expr).strip()
    inner = _single_expression(text)
    if inner is not None:
        text = inner
    try:
        value = _evaluate(text, variables)
        return _bool(value) if isinstance(value, str) else bool(value)
    except (jinja2.TemplateError, TypeError, ValueError) as exc:
        prefix = f"{where}: " if where else ""
        raise TemplateError(f"{prefix}condition {str(expr)!r}: {_describe(exc)}") from None
