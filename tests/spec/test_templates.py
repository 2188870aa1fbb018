"""Tests for stageflow.spec.templates: ``${...}`` references and rendering."""

from __future__ import annotations

from typing import Any

import pytest

from stageflow.spec.templates import (
    RESERVED_SCOPES,
    Reference,
    TemplateError,
    find_references,
    render,
)


@pytest.fixture
def scope() -> dict[str, Any]:
    return {
        "params": {"n": 3, "name": "a b", "ratio": 1.5, "flag": True, "nothing": None,
                   "conf": {"k": [1, 2]}},
        "run": {"id": "hello-123", "date": "2024-05-01"},
        "matrix": {"x": 7},
        "make": {"outputs": {"numbers": [1, 2, 3],
                             "rows": [{"a": {"b": 1}}, {"a": {"b": 2}}]}},
        # A fan-in: a matrix stage's outputs are one dict per instance, in matrix order.
        "square": {"outputs": [{"value": 1}, {"value": 4}, {"value": 9}]},
    }  # fmt: skip


def test_reserved_scopes() -> None:
    assert {"params", "matrix", "run"} == RESERVED_SCOPES


# --- whole-string templates keep the value's type ----------------------------------------------


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("${params.n}", 3),
        ("${params.ratio}", 1.5),
        ("${params.flag}", True),
        ("${params.nothing}", None),
        ("${params.conf}", {"k": [1, 2]}),
        ("${make.outputs.numbers}", [1, 2, 3]),
        ("${params.name}", "a b"),
        ("${ params.n }", 3),
        ("${params . n}", 3),
    ],
)
def test_whole_string_template_keeps_type(
    scope: dict[str, Any], template: str, expected: Any
) -> None:
    result = render(template, scope)
    assert result == expected
    assert type(result) is type(expected)


def test_whole_string_returns_the_same_nested_value(scope: dict[str, Any]) -> None:
    assert render("${params.conf}", scope) == scope["params"]["conf"]


# --- interpolation -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("n=${params.n}", "n=3"),
        ("day_${run.date}.csv", "day_2024-05-01.csv"),
        ("${run.id}/${matrix.x}", "hello-123/7"),
        ("${params.n}${params.n}", "33"),
        ("name: ${params.name}!", "name: a b!"),
        ("r=${params.ratio}", "r=1.5"),
        # Non-strings are formatted as JSON inside a longer string.
        ("c=${params.conf}", 'c={"k": [1, 2]}'),
        ("v=${square.outputs.value}", "v=[1, 4, 9]"),
        ("${params.flag}/${params.nothing}", "true/null"),
        ("no templates here", "no templates here"),
        ("$ and { and } alone", "$ and { and } alone"),
    ],
)
def test_interpolation(scope: dict[str, Any], template: str, expected: str) -> None:
    assert render(template, scope) == expected


def test_interpolated_values_are_not_rendered_again() -> None:
    # A value that itself looks like a template is inserted verbatim, not expanded.
    scope = {"params": {"a": "${params.b}", "b": "secret"}}
    assert render("x ${params.a}", scope) == "x ${params.b}"
    assert render("${params.a}", scope) == "${params.b}"


# --- $${ escapes -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("$${params.n}", "${params.n}"),
        ("cost: $${HOME} and ${params.n}", "cost: ${HOME} and 3"),
        ("echo $${x}", "echo ${x}"),
        ("$${", "${"),
    ],
)
def test_escape(scope: dict[str, Any], template: str, expected: str) -> None:
    assert render(template, scope) == expected


def test_escaped_template_is_not_a_reference() -> None:
    assert list(find_references("$${params.n}")) == []
    refs = list(find_references("$${a.b} ${params.n}"))
    assert [r.path for r in refs] == [("params", "n")]


def test_escaped_template_is_not_looked_up() -> None:
    # Nothing named "nope" exists, and none is needed: the escape makes it literal.
    assert render("$${nope.x}", {}) == "${nope.x}"


# --- lists: indexes and plucking (fan-in) ------------------------------------------------------


def test_fan_in_plucks_a_key_from_each_instance(scope: dict[str, Any]) -> None:
    assert render("${square.outputs.value}", scope) == [1, 4, 9]


def test_pluck_keeps_matrix_order() -> None:
    scope = {"s": {"outputs": [{"v": "c"}, {"v": "a"}, {"v": "b"}]}}
    assert render("${s.outputs.v}", scope) == ["c", "a", "b"]


def test_pluck_from_an_empty_fan_in_is_empty() -> None:
    assert render("${s.outputs.v}", {"s": {"outputs": []}}) == []


def test_pluck_goes_through_nested_keys(scope: dict[str, Any]) -> None:
    assert render("${make.outputs.rows.a.b}", scope) == [1, 2]


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("${square.outputs.0.value}", 1),
        ("${square.outputs.2.value}", 9),
        ("${square.outputs.-1.value}", 9),
        ("${square.outputs.-3.value}", 1),
        ("${make.outputs.numbers.1}", 2),
        ("${square.outputs.1}", {"value": 4}),
    ],
)
def test_numeric_parts_index_lists(scope: dict[str, Any], template: str, expected: Any) -> None:
    assert render(template, scope) == expected


@pytest.mark.parametrize("index", ["3", "-4", "99"])
def test_index_out_of_range(scope: dict[str, Any], index: str) -> None:
    with pytest.raises(TemplateError) as info:
        render(f"${{square.outputs.{index}.value}}", scope)
    assert f"index {int(index)} is out of range (3 items)" in str(info.value)


def test_pluck_of_a_missing_key_in_an_instance_names_the_known_keys() -> None:
    scope = {"s": {"outputs": [{"v": 1}, {"w": 2}]}}
    with pytest.raises(TemplateError) as info:
        render("${s.outputs.v}", scope)
    message = str(info.value)
    assert "${s.outputs.v}" in message
    assert "known: w" in message


def test_digit_key_of_a_mapping_is_a_key_not_an_index() -> None:
    assert render("${p.0}", {"p": {"0": "zero"}}) == "zero"


# --- errors ------------------------------------------------------------------------------------


def test_unknown_key_names_what_exists(scope: dict[str, Any]) -> None:
    with pytest.raises(TemplateError) as info:
        render("${params.zz}", scope)
    message = str(info.value)
    assert message.startswith("${params.zz}:")
    assert "'params.zz' does not exist" in message
    assert "known: conf, flag, n, name, nothing, ratio" in message


def test_unknown_top_level_scope_names_what_exists(scope: dict[str, Any]) -> None:
    with pytest.raises(TemplateError) as info:
        render("${nope.outputs.x}", scope)
    message = str(info.value)
    assert "'nope' does not exist" in message
    assert "known: make, matrix, params, run, square" in message


def test_unknown_key_inside_a_longer_string_names_the_template(scope: dict[str, Any]) -> None:
    with pytest.raises(TemplateError) as info:
        render("a ${params.n} b ${make.outputs.missing} c", scope)
    message = str(info.value)
    assert message.startswith("${make.outputs.missing}:")
    assert "'make.outputs.missing' does not exist (known: numbers, rows)" in message


def test_unknown_key_in_an_empty_mapping_says_nothing_is_known() -> None:
    with pytest.raises(TemplateError, match=r"known: nothing"):
        render("${params.a}", {"params": {}})


@pytest.mark.parametrize(
    ("template", "fragment"),
    [
        ("${params.n.x}", "cannot take 'x' of a int"),
        ("${params.name.upper}", "cannot take 'upper' of a str"),
        ("${params.nothing.x}", "cannot take 'x' of a NoneType"),
        ("${make.outputs.numbers.x}", "cannot take 'x' of a int"),
    ],
)
def test_stepping_into_a_scalar_is_an_error(
    scope: dict[str, Any], template: str, fragment: str
) -> None:
    with pytest.raises(TemplateError) as info:
        render(template, scope)
    assert fragment in str(info.value)


def test_template_error_is_a_value_error() -> None:
    assert issubclass(TemplateError, ValueError)


# --- nested values -----------------------------------------------------------------------------


def test_render_walks_dicts_and_lists(scope: dict[str, Any]) -> None:
    value = {
        "count": "${params.n}",
        "files": ["in_${matrix.x}.csv", "${run.id}", 5, None],
        "deep": {"list": [{"v": "${square.outputs.value}"}]},
        "plain": 1.25,
    }
    assert render(value, scope) == {
        "count": 3,
        "files": ["in_7.csv", "hello-123", 5, None],
        "deep": {"list": [{"v": [1, 4, 9]}]},
        "plain": 1.25,
    }


def test_render_leaves_keys_and_non_string_values_alone() -> None:
    value = {"${params.n}": 1, 2: True}
    assert render(value, {"params": {"n": 3}}) == {"${params.n}": 1, 2: True}


def test_render_does_not_change_its_input(scope: dict[str, Any]) -> None:
    value = {"a": ["${params.n}"]}
    render(value, scope)
    assert value == {"a": ["${params.n}"]}


# --- find_references ---------------------------------------------------------------------------


def test_find_references_in_a_string_in_order() -> None:
    refs = list(find_references("cp ${params.src} ${ make.outputs.dir }/${run.id}"))
    assert [r.path for r in refs] == [
        ("params", "src"),
        ("make", "outputs", "dir"),
        ("run", "id"),
    ]
    assert [r.text for r in refs] == ["${params.src}", "${ make.outputs.dir }", "${run.id}"]
    assert [r.scope for r in refs] == ["params", "make", "run"]
    assert all(r.location == () for r in refs)


def test_find_references_locations_in_nested_values() -> None:
    value = {
        "a": ["x ${params.n} ${run.id}", {"b": "${make.outputs.x}"}],
        "c": "$${escaped}",
        "d": 5,
        "e": {"f": {"g": ["plain", "${matrix.k}"]}},
    }
    refs = list(find_references(value))
    assert refs == [
        Reference(("params", "n"), "${params.n}", ("a", 0)),
        Reference(("run", "id"), "${run.id}", ("a", 0)),
        Reference(("make", "outputs", "x"), "${make.outputs.x}", ("a", 1, "b")),
        Reference(("matrix", "k"), "${matrix.k}", ("e", "f", "g", 1)),
    ]


def test_find_references_prefixes_the_given_location() -> None:
    refs = list(find_references({"x": ["${params.n}"]}, ("stages", "s", "with")))
    assert [r.location for r in refs] == [("stages", "s", "with", "x", 0)]


@pytest.mark.parametrize("value", ["", "plain", 3, None, True, [], {}, ["a", {"b": 1}], "$${x}"])
def test_find_references_none(value: Any) -> None:
    assert list(find_references(value)) == []


def test_empty_template_is_a_reference_with_an_empty_scope() -> None:
    (ref,) = find_references("${}")
    assert ref.path == ("",)
    assert ref.scope == ""
