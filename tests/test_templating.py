"""Templating: StrictUndefined, variable precedence, lazy vars, Ansible's bare conditions."""

from __future__ import annotations

import pytest

from provision.templating import TemplateError, condition, merge_vars, render, render_text

WHERE = "site.yml:12: task 'write config'"


def test_precedence_inventory_play_runtime_extra() -> None:
    v = merge_vars(
        {"a": "inv", "b": "inv", "c": "inv", "d": "inv"},
        {"b": "play", "c": "play", "d": "play"},
        {"c": "registered", "d": "registered"},
        {"d": "extra"},
    )
    assert [render("{{ " + k + " }}", v) for k in "abcd"] == ["inv", "play", "registered", "extra"]


def test_single_expression_keeps_its_type_text_stays_text() -> None:
    v = merge_vars({"n": 3, "l": [1, 2], "m": {"k": True}}, {}, {}, {})
    assert render("{{ n }}", v) == 3
    assert render("{{ l }}", v) == [1, 2]
    assert render("{{ m }}", v) == {"k": True}
    assert render("n={{ n }}", v) == "n=3"
    # one trailing newline: Jinja drops it, Ansible gives it back to a string only (ansible-core
    # 2.19: set_fact of "{{ n }}\n" is the int 3, of "{{ 'x' }}\n" the string "x\n")
    assert render("{{ n }}\n", v) == 3
    assert render("{{ 'x' }}\n", v) == "x\n"
    assert render("{{ n }}\n\n", v) == "3\n\n"  # two: text
    assert render({"k": ["{{ n + 1 }}", "x"]}, v) == {"k": [4, "x"]}


def test_vars_referring_to_vars_render_lazily() -> None:
    v = merge_vars({"base": "/srv"}, {"dir": "{{ base }}/app", "unused": "{{ nothing }}"}, {}, {})
    assert render("{{ dir }}/conf", v) == "/srv/app/conf"  # the broken unused var is harmless
    with pytest.raises(TemplateError, match="undefined variable 'nothing'"):
        render("{{ unused }}", v, WHERE)
    loop = merge_vars({}, {"a": "{{ b }}", "b": "{{ a }}"}, {}, {})
    with pytest.raises(TemplateError, match="refers to itself"):
        render("{{ a }}", loop, WHERE)


def test_undefined_variable_names_task_and_variable() -> None:
    v = merge_vars({"known": 1}, {}, {}, {})
    with pytest.raises(TemplateError) as err:
        render({"dest": "/etc/{{ missing_var }}.conf"}, v, WHERE)
    assert str(err.value) == f"{WHERE}: undefined variable 'missing_var'"
    with pytest.raises(TemplateError) as err:
        render_text("x={{ other }}\n", v, WHERE)
    assert str(err.value) == f"{WHERE}: undefined variable 'other'"
    with pytest.raises(TemplateError, match="template syntax error"):
        render("{{ known + }}", v, WHERE)


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("n == 3", True),
        ("n > 5", False),
        ("{{ n == 3 }}", True),
        (True, True),
        (False, False),
        (None, True),
        (["n == 3", "flag"], False),
        ("flag", False),  # the string "no" from an inventory is false, as in Ansible
        ("maybe is defined", False),
        ("maybe is not defined", True),
        ("result is changed", True),
        ("result.rc != 0", False),
        ("'gpu' in group_names", True),
    ],
)
def test_conditions(expr: object, expected: bool) -> None:
    v = merge_vars(
        {"n": 3, "flag": "no", "group_names": ["gpu"]},
        {},
        {"result": {"changed": True, "rc": 0}},
        {},
    )
    assert condition(expr, v, WHERE) is expected


def test_condition_on_undefined_names_the_variable() -> None:
    v = merge_vars({}, {}, {}, {})
    with pytest.raises(TemplateError) as err:
        condition("ghost == 1", v, WHERE)
    assert str(err.value) == f"{WHERE}: condition 'ghost == 1': undefined variable 'ghost'"


def test_filters_and_quote() -> None:
    v = merge_vars({"evil": "a'; rm -rf / #", "d": {"b": 1, "a": [1]}}, {}, {}, {})
    assert render("echo {{ evil | quote }}", v) == "echo 'a'\"'\"'; rm -rf / #'"
    assert render("{{ d | to_json }}", v) == '{"b": 1, "a": [1]}'
    assert render("{{ 'yes' | bool }}", v) is True
    assert render("{{ missing | default('x') }}", v) == "x"
    assert render("{{ '/a/b.txt' | basename }}", v) == "b.txt"


def test_sandbox_blocks_python_internals() -> None:
    v = merge_vars({}, {}, {}, {})
    with pytest.raises(TemplateError):
        render("{{ ''.__class__.__mro__ }}", v, WHERE)
