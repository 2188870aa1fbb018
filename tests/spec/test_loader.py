"""Tests for stageflow.spec.loader: YAML to data, with the line and column of what was written."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from stageflow.errors import SpecIssue
from stageflow.spec.loader import Positions, read_yaml


def _doc(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


def _line_of(text: str, needle: str) -> int:
    """1-based number of the one line of ``text`` that contains ``needle``."""
    lines = [n for n, line in enumerate(text.splitlines(), start=1) if needle in line]
    assert len(lines) == 1, f"{needle!r} is on lines {lines}"
    return lines[0]


SPEC = _doc(
    """
    name: demo
    params: {n: 3, names: [a, b]}
    stages:
      make:
        uses: python
        with: {function: "m:f", count: "${params.n}"}
      square:
        needs: [make]
        uses: python
        with:
          function: "m:g"
          items:
            - first
            - {deep: 1}
    """
)


def test_data_is_the_same_as_plain_yaml() -> None:
    import yaml

    document = read_yaml(SPEC, "spec.yaml")
    assert document.issues == []
    assert document.data == yaml.safe_load(SPEC)


def _nth_line_of(text: str, needle: str, nth: int) -> int:
    lines = [n for n, line in enumerate(text.splitlines(), start=1) if needle in line]
    return lines[nth]


@pytest.mark.parametrize(
    ("path", "needle", "nth"),
    [
        (("name",), "name: demo", 0),
        (("params", "n"), "params:", 0),
        (("stages", "make", "uses"), "uses: python", 0),
        (("stages", "square", "uses"), "uses: python", 1),
        (("stages", "make", "with", "count"), "count:", 0),
        (("stages", "square", "with", "function"), '"m:g"', 0),
        (("stages", "square", "needs"), "needs: [make]", 0),
    ],
)
def test_positions_of_nested_keys_are_on_their_lines(
    path: tuple[str, ...], needle: str, nth: int
) -> None:
    positions = read_yaml(SPEC, "spec.yaml").positions
    assert path in positions.values
    line, column = positions.locate(path)
    assert line == _nth_line_of(SPEC, needle, nth)
    assert column is not None and column >= 1


def test_positions_of_the_two_stages_differ() -> None:
    positions = read_yaml(SPEC, "spec.yaml").positions
    make_line, _ = positions.locate(("stages", "make", "uses"))
    square_line, _ = positions.locate(("stages", "square", "uses"))
    lines = SPEC.splitlines()
    assert lines[make_line - 1].strip() == "uses: python"
    assert lines[square_line - 1].strip() == "uses: python"
    assert square_line > make_line
    assert square_line > _line_of(SPEC, "square:")


def test_positions_of_list_items_nested_in_mappings() -> None:
    positions = read_yaml(SPEC, "spec.yaml").positions
    assert positions.locate(("stages", "square", "with", "items", 0)) == (
        _line_of(SPEC, "- first"),
        SPEC.splitlines()[_line_of(SPEC, "- first") - 1].index("first") + 1,
    )
    deep_line = _line_of(SPEC, "{deep: 1}")
    assert positions.locate(("stages", "square", "with", "items", 1, "deep"))[0] == deep_line
    assert positions.locate(("stages", "square", "needs", 0))[0] == _line_of(SPEC, "[make]")


def test_positions_in_flow_collections_have_exact_columns() -> None:
    text = "params: {n: 3, names: [a, bb, c]}\n"
    positions = read_yaml(text, "f.yaml").positions
    assert positions.locate(("params", "n")) == (1, text.index("3") + 1)
    assert positions.locate(("params", "names")) == (1, text.index("[") + 1)
    assert positions.locate(("params", "names", 1)) == (1, text.index("bb") + 1)
    assert positions.locate(("params", "names", 2)) == (1, text.index("c]") + 1)


def test_locate_falls_back_to_the_nearest_written_ancestor() -> None:
    positions = read_yaml(SPEC, "spec.yaml").positions
    assert positions.locate(("stages", "make", "with", "missing", 3)) == positions.locate(
        ("stages", "make", "with")
    )
    assert positions.locate(("stages", "nope")) == positions.locate(("stages",))
    assert positions.locate(("nope",)) == (1, 1)  # the document itself


def test_locate_in_empty_positions_is_unknown() -> None:
    assert Positions().locate(("a", "b")) == (None, None)
    assert Positions().locate(()) == (None, None)


def test_block_collections_are_located_at_their_keys_scalars_at_their_values() -> None:
    # A block collection's own start is its first child's line, so an error about the whole
    # entry (e.g. a field missing from a stage) points at the key that introduces it. A scalar
    # points at the value itself, the most precise place for an "invalid value" error.
    text = "stages:\n  make:\n    uses: python\n"
    positions = read_yaml(text, "f.yaml").positions
    assert positions.locate(("stages", "make", "uses")) == (3, 11)
    assert positions.locate(("stages", "make")) == (2, 3)
    assert positions.locate(("stages",)) == (1, 1)
    assert positions.locate(("stages", "make", "missing")) == (2, 3)


def test_keys_are_located_where_they_were_written() -> None:
    text = "stages:\n  make:\n    uses: python\n  flow: {uses: x}\n"
    positions = read_yaml(text, "f.yaml").positions
    assert positions.keys == {
        ("stages",): (1, 1),
        ("stages", "make"): (2, 3),
        ("stages", "make", "uses"): (3, 5),
        ("stages", "flow"): (4, 3),
        ("stages", "flow", "uses"): (4, 10),
    }
    assert positions.locate(("stages", "flow")) == (4, 9)  # a flow mapping: its own `{`
    assert positions.locate_key(("stages", "flow")) == (4, 3)
    assert positions.locate_key(("stages", "flow", "nope")) == (4, 9)  # falls back to locate


def test_an_alias_is_located_at_its_key_not_at_its_anchor() -> None:
    text = _doc(
        """
        base: &base {uses: python}
        name: &name demo
        stages:
          a: *base
          b: *name
        """
    )
    positions = read_yaml(text, "f.yaml").positions
    assert positions.locate(("stages", "a")) == (_line_of(text, "a: *base"), 3)
    assert positions.locate(("stages", "b")) == (_line_of(text, "b: *name"), 3)


# --- duplicate keys ----------------------------------------------------------------------------


def test_duplicate_top_level_key_is_an_issue_with_its_line() -> None:
    text = "name: a\nparams: {}\nname: b\nstages: {}\n"
    document = read_yaml(text, "dup.yaml")
    assert document.issues == [SpecIssue("dup.yaml", 3, 1, "name", "duplicate key")]
    # The data is still built (the last value wins), so later checks can run.
    assert document.data["name"] == "b"


def test_duplicate_nested_key_names_its_dotted_path() -> None:
    text = _doc(
        """
        stages:
          make:
            uses: python
            queue: a
            uses: shell
        """
    )
    (issue,) = read_yaml(text, "dup.yaml").issues
    assert issue.file == "dup.yaml"
    assert issue.field == "stages.make.uses"
    assert issue.line == _line_of(text, "uses: shell")
    assert issue.column == 5
    assert issue.message == "duplicate key"
    assert str(issue) == f"dup.yaml:{issue.line}:5: stages.make.uses: duplicate key"


def test_duplicate_stage_names_and_flow_keys_are_all_reported() -> None:
    text = _doc(
        """
        stages:
          a: {uses: x, uses: y}
          b: {uses: x}
          a: {uses: z}
        """
    )
    issues = read_yaml(text, "dup.yaml").issues
    assert {(i.field, i.line) for i in issues} == {
        ("stages.a.uses", _line_of(text, "uses: y")),
        ("stages.a", _line_of(text, "uses: z")),
    }


def test_same_key_in_different_mappings_is_not_a_duplicate() -> None:
    text = "a: {x: 1}\nb: {x: 2}\nc: [{x: 1}, {x: 2}]\n"
    assert read_yaml(text, "f.yaml").issues == []


def test_merge_key_override_is_not_a_duplicate() -> None:
    text = _doc(
        """
        defaults: &defaults
          uses: python
          queue: gpu
        stages:
          a:
            <<: *defaults
            queue: cpu
        """
    )
    document = read_yaml(text, "merge.yaml")
    assert document.data["stages"]["a"] == {"uses": "python", "queue": "cpu"}
    assert document.issues == []
    assert document.positions.locate(("stages", "a", "queue"))[0] == _line_of(text, "queue: cpu")


def test_a_key_written_twice_beside_a_merge_is_still_a_duplicate() -> None:
    text = _doc(
        """
        defaults: &defaults
          queue: gpu
        stages:
          a:
            <<: *defaults
            queue: cpu
            queue: io
          b: *defaults
          c:
            <<: *defaults
        """
    )
    document = read_yaml(text, "merge.yaml")
    assert document.issues == [
        SpecIssue("merge.yaml", _line_of(text, "queue: io"), 5, "stages.a.queue", "duplicate key")
    ]
    assert document.data["stages"] == {
        "a": {"queue": "io"},
        "b": {"queue": "gpu"},
        "c": {"queue": "gpu"},
    }


def test_merging_several_mappings_lets_the_first_win_without_duplicates() -> None:
    text = "x: &x {q: 1}\ny: &y {q: 2, r: 2}\nz:\n  <<: [*x, *y]\n  s: 3\n"
    document = read_yaml(text, "merge.yaml")
    assert document.issues == []
    assert document.data["z"] == {"q": 1, "r": 2, "s": 3}


def test_merge_keys_are_expanded() -> None:
    text = _doc(
        """
        defaults: &defaults
          uses: python
          queue: gpu
        stages:
          a:
            <<: *defaults
            needs: []
        """
    )
    document = read_yaml(text, "merge.yaml")
    assert document.issues == []
    assert document.data["stages"]["a"] == {"uses": "python", "queue": "gpu", "needs": []}


# --- syntax errors and empty files -------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ("name: x\nstages: [a,\n", 3, "expected the node content"),
        ("name: x\nstages: a: b\n", 2, "mapping values are not allowed here"),
        ("name: x\nstages:\n\t- a\n", 3, "cannot start any token"),
        ('name: "x\n', 2, "unexpected end of stream"),
        ("name: x\nstages: *nope\n", 2, "undefined alias"),
        ("a: 1\n---\nb: 2\n", 2, "another document"),
    ],
)
def test_syntax_error_is_a_located_issue(text: str, line: int, fragment: str) -> None:
    document = read_yaml(text, "bad.yaml")
    assert document.data is None
    (issue,) = document.issues
    assert issue.file == "bad.yaml"
    assert issue.line == line
    assert issue.column is not None
    assert issue.field == ""
    assert issue.message.startswith("YAML syntax error: ")
    assert fragment in issue.message
    assert str(issue).startswith(f"bad.yaml:{line}:")


@pytest.mark.parametrize("text", ["", "\n\n", "   \n", "# only a comment\n"])
def test_empty_file_is_an_issue(text: str) -> None:
    document = read_yaml(text, "empty.yaml")
    assert document.data is None
    assert document.issues == [SpecIssue("empty.yaml", 1, 1, "", "the file is empty")]


@pytest.mark.parametrize(("text", "data"), [("[]\n", []), ("- a\n- b\n", ["a", "b"]), ("3\n", 3)])
def test_non_mapping_documents_are_read_as_is(text: str, data: object) -> None:
    document = read_yaml(text, "f.yaml")
    assert document.issues == []
    assert document.data == data


def test_scalar_types_are_those_of_safe_yaml() -> None:
    text = "i: 3\nf: 1.5\nb: true\nn: null\ns: '3'\nd: 2024-01-02\n"
    data = read_yaml(text, "f.yaml").data
    assert data["i"] == 3 and type(data["i"]) is int
    assert data["f"] == 1.5
    assert data["b"] is True
    assert data["n"] is None
    assert data["s"] == "3"
    assert str(data["d"]) == "2024-01-02"


def test_python_scalar_tags_are_refused() -> None:
    # A spec is data: the safe loader must not construct arbitrary Python objects.
    document = read_yaml("name: x\nf: !!python/name:os.system\n", "evil.yaml")
    assert document.data is None
    (issue,) = document.issues
    assert issue.line == 2
    assert "YAML syntax error" in issue.message


def test_python_collection_tags_run_nothing(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("still here")
    read_yaml(f"a: !!python/object/apply:os.remove ['{victim}']\n", "evil.yaml")
    assert victim.read_text() == "still here"


def test_python_collection_tags_are_refused() -> None:
    document = read_yaml("a: !!python/object/apply:os.getcwd []\n", "evil.yaml")
    assert document.data is None
    (issue,) = document.issues
    assert issue.line == 1
    assert issue.column == 4
    assert issue.message == (
        "YAML syntax error: tag '!!python/object/apply:os.getcwd' is not allowed on a list: "
        "a spec holds plain data only"
    )


@pytest.mark.parametrize(
    ("text", "line", "tag"),
    [
        ("a: !!set {x}\n", 1, "!!set"),
        ("a: !!omap [{x: 1}]\n", 1, "!!omap"),
        ("a: 1\nb: !local\n  c: 1\n", 2, "!local"),
        ("!!python/object:os.Foo {}\n", 1, "!!python/object:os.Foo"),
        ("a:\n  - !!python/object/new:str [x]\n", 2, "!!python/object/new:str"),
    ],
)
def test_other_collection_tags_are_refused(text: str, line: int, tag: str) -> None:
    document = read_yaml(text, "tags.yaml")
    assert document.data is None
    (issue,) = document.issues
    assert issue.line == line
    assert f"tag {tag!r} is not allowed" in issue.message


def test_standard_collection_tags_are_accepted() -> None:
    document = read_yaml("a: !!map {b: !!seq [1]}\n", "tags.yaml")
    assert document.issues == []
    assert document.data == {"a": {"b": [1]}}


def test_unhashable_key_is_a_located_issue() -> None:
    document = read_yaml("? [1, 2]\n: x\n", "f.yaml")
    assert document.data is None
    (issue,) = document.issues
    assert issue.line == 1
    assert "a mapping key must be a plain value" in issue.message


def test_nested_mapping_key_is_a_located_issue() -> None:
    document = read_yaml("stages:\n  ? {a: 1}\n  : x\n", "f.yaml")
    assert document.data is None
    (issue,) = document.issues
    assert (issue.line, issue.column) == (2, 5)


def test_a_scalar_that_looks_like_a_date_but_is_none_is_located() -> None:
    text = (
        'name: p\nstages:\n  a:\n    uses: python\n    with: {function: "m:f", day: 2026-13-01}\n'
    )
    document = read_yaml(text, "p.yaml")
    [issue] = document.issues
    assert (issue.line, issue.field) == (5, "stages.a.with.day")
    assert "month must be in 1..12" in issue.message and "quote it" in issue.message
