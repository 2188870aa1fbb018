"""Tests for stageflow.spec.validate and model: whole-spec checks, located issues, Python API."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from stageflow.errors import SpecError, SpecIssue
from stageflow.spec.model import Pipeline, RetryPolicy, Stage
from stageflow.spec.validate import check_pipeline, load_pipeline, parse_pipeline

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _doc(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


def _write(tmp_path: Path, text: str, name: str = "pipeline.yaml") -> tuple[Path, str]:
    text = _doc(text)
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path, text


def _line_of(text: str, needle: str) -> int:
    """1-based number of the one line of ``text`` that contains ``needle``."""
    lines = [n for n, line in enumerate(text.splitlines(), start=1) if needle in line]
    assert len(lines) == 1, f"{needle!r} is on lines {lines}"
    return lines[0]


def _issues(path: Path) -> list[SpecIssue]:
    with pytest.raises(SpecError) as info:
        load_pipeline(path)
    issues = info.value.issues
    assert issues, "SpecError without issues"
    return issues


def _one(issues: list[SpecIssue], field: str) -> SpecIssue:
    found = [issue for issue in issues if issue.field == field]
    assert len(found) == 1, f"no single issue for {field!r} in {[str(i) for i in issues]}"
    return found[0]


def _only(path: Path) -> SpecIssue:
    issues = _issues(path)
    assert len(issues) == 1, [str(i) for i in issues]
    return issues[0]


# --- valid specs -------------------------------------------------------------------------------


def test_example_hello_loads() -> None:
    pipeline = load_pipeline(EXAMPLES / "hello.yaml")
    assert pipeline.name == "hello"
    assert pipeline.params == {"n": 3}
    assert list(pipeline.stages) == ["make", "square", "total", "report"]
    square = pipeline.stages["square"]
    assert square.needs == ["make"]
    assert square.matrix == {"x": "${make.outputs.numbers}"}
    assert square.with_ == {"function": "hello_steps:square", "x": "${matrix.x}"}
    assert square.timeout == 600.0
    assert square.retry == RetryPolicy(
        max_attempts=3, initial_interval=1.0, backoff=2.0, non_retryable=["ValueError"]
    )
    assert pipeline.stages["report"].uses == "shell"
    assert check_pipeline(pipeline) == []


def test_load_pipeline_accepts_a_str_path() -> None:
    assert load_pipeline(str(EXAMPLES / "hello.yaml")).name == "hello"


def test_defaults(tmp_path: Path) -> None:
    path, _ = _write(tmp_path, 'name: p\nstages:\n  a: {uses: python, with: {function: "m:f"}}\n')
    stage = load_pipeline(path).stages["a"]
    assert stage.queue == "default"
    assert stage.needs == [] and stage.tags == []
    assert stage.timeout == 3600.0
    assert stage.heartbeat_timeout is None
    assert stage.retry == RetryPolicy()
    assert stage.retry.max_attempts == 3
    assert stage.matrix is None and stage.gate is None


def test_durations_are_parsed_everywhere(tmp_path: Path) -> None:
    path, _ = _write(
        tmp_path,
        """
        name: p
        stages:
          a:
            uses: python
            with: {function: "m:f"}
            timeout: 1h30m
            heartbeat_timeout: 500ms
            retry: {initial_interval: 2s, max_interval: 5m}
        """,
    )
    stage = load_pipeline(path).stages["a"]
    assert stage.timeout == 5400.0
    assert stage.heartbeat_timeout == 0.5
    assert stage.retry.initial_interval == 2.0
    assert stage.retry.max_interval == 300.0


def test_transitive_needs_allow_templates(tmp_path: Path) -> None:
    path, _ = _write(
        tmp_path,
        """
        name: p
        params: {n: 2}
        stages:
          make: {uses: python, with: {function: "m:f", n: "${params.n}"}}
          mid: {uses: python, needs: [make], with: {function: "m:g"}}
          last:
            uses: shell
            needs: [mid]
            matrix: {x: "${make.outputs.items}", y: [1, 2]}
            with:
              command: "echo ${make.outputs.x} ${matrix.x} ${matrix.y} ${run.id} $${HOME}"
              env: {RUN: "${run.date}", P: "${run.pipeline}", S: "${run.started_at}"}
        """,
    )
    pipeline = load_pipeline(path)
    assert pipeline.stages["last"].needs == ["mid"]


def test_valid_cron_schedule(tmp_path: Path) -> None:
    path, _ = _write(
        tmp_path,
        'name: p\nschedule: "0 6 * * 1-5"\nstages:\n  a: {uses: shell, with: {command: x}}\n',
    )
    assert load_pipeline(path).schedule == "0 6 * * 1-5"


def test_to_dict_round_trips_through_yaml() -> None:
    pipeline = load_pipeline(EXAMPLES / "hello.yaml")
    data = pipeline.to_dict()
    assert "with" in data["stages"]["make"] and "with_" not in data["stages"]["make"]
    again = parse_pipeline(yaml.safe_dump(data), "again.yaml")
    assert again == pipeline
    assert again.to_dict() == data


# --- the Python API ----------------------------------------------------------------------------


def test_python_api_builds_the_same_model_as_yaml(tmp_path: Path) -> None:
    path, _ = _write(
        tmp_path,
        """
        name: hello
        params: {n: 3}
        stages:
          a:
            uses: python
            with: {function: "m:f", count: "${params.n}"}
            tags: [gpu, big]
            timeout: 10m
            retry: {max_attempts: 5, initial_interval: 2s}
          b:
            uses: shell
            needs: [a]
            queue: cpu.small
            with: {command: "echo ${a.outputs.x}"}
        """,
    )
    from_yaml = load_pipeline(path)
    from_python = Pipeline(
        name="hello",
        params={"n": 3},
        stages={
            "a": Stage(
                uses="python",
                with_={"function": "m:f", "count": "${params.n}"},
                tags=["big", "gpu", "gpu"],
                timeout="10m",
                retry=RetryPolicy(max_attempts=5, initial_interval="2s"),
            ),
            "b": Stage(
                uses="shell",
                needs=["a"],
                queue="cpu.small",
                with_={"command": "echo ${a.outputs.x}"},
            ),
        },
    )
    assert from_python.to_dict() == from_yaml.to_dict()
    assert from_python == from_yaml
    assert check_pipeline(from_python) == []


def test_python_api_minimal_example() -> None:
    pipeline = Pipeline(name="x", stages={"a": Stage(uses="python", with_={"function": "m:f"})})
    assert pipeline.to_dict() == {
        "name": "x",
        "stages": {"a": {"uses": "python", "with": {"function": "m:f"}}},
    }
    assert (
        pipeline.to_dict()
        == parse_pipeline(
            'name: x\nstages:\n  a: {uses: python, with: {function: "m:f"}}\n'
        ).to_dict()
    )
    assert check_pipeline(pipeline) == []


def test_stage_accepts_with_by_alias() -> None:
    assert Stage(uses="shell", **{"with": {"command": "x"}}).with_ == {"command": "x"}


def test_check_pipeline_on_a_python_built_pipeline_reports_without_lines() -> None:
    pipeline = Pipeline(
        name="x",
        stages={
            "a": Stage(uses="nope"),
            "b": Stage(uses="shell", needs=["zz"], with_={"command": "${params.q}"}),
        },
    )
    issues = check_pipeline(pipeline)
    assert {i.field for i in issues} == {
        "stages.a.uses",
        "stages.b.needs.0",
        "stages.b.with.command",
    }
    assert all(i.file == "<pipeline>" and i.line is None and i.column is None for i in issues)
    assert check_pipeline(pipeline, "mine.py")[0].file == "mine.py"


def test_models_are_frozen() -> None:
    stage = Stage(uses="shell", with_={"command": "x"})
    with pytest.raises(Exception, match="frozen"):
        stage.uses = "python"  # type: ignore[misc]


# --- with_params -------------------------------------------------------------------------------


def test_with_params_overrides_known_params() -> None:
    pipeline = load_pipeline(EXAMPLES / "hello.yaml")
    changed = pipeline.with_params({"n": 10})
    assert changed.params == {"n": 10}
    assert pipeline.params == {"n": 3}  # the original is untouched
    assert changed.stages == pipeline.stages
    assert pipeline.with_params({}) == pipeline


def test_with_params_rejects_unknown_params() -> None:
    pipeline = load_pipeline(EXAMPLES / "hello.yaml")
    with pytest.raises(KeyError) as info:
        pipeline.with_params({"n": 1, "zz": 2, "aa": 3})
    message = str(info.value)
    assert "aa, zz" in message
    assert "known: n" in message


def test_with_params_when_none_are_declared() -> None:
    pipeline = Pipeline(name="x", stages={"a": Stage(uses="shell", with_={"command": "x"})})
    with pytest.raises(KeyError, match="known: none"):
        pipeline.with_params({"n": 1})


# --- needs and cycles --------------------------------------------------------------------------


def test_unknown_needs_stage(tmp_path: Path) -> None:
    path, text = _write(
        tmp_path,
        """
        name: p
        stages:
          a: {uses: shell, with: {command: x}}
          b: {uses: shell, with: {command: x}, needs: [a, zz]}
        """,
    )
    issue = _only(path)
    assert issue.file == str(path)
    assert issue.field == "stages.b.needs.1"
    assert issue.line == _line_of(text, "needs: [a, zz]")
    assert issue.column == text.splitlines()[issue.line - 1].index("zz") + 1
    assert "unknown stage 'zz'" in issue.message
    assert "stages: a, b" in issue.message


def test_unknown_needs_in_a_block_list(tmp_path: Path) -> None:
    path, text = _write(
        tmp_path,
        """
        name: p
        stages:
          a: {uses: shell, with: {command: x}}
          b:
            uses: shell
            with: {command: x}
            needs:
              - a
              - missing
        """,
    )
    issue = _only(path)
    assert issue.field == "stages.b.needs.1"
    assert issue.line == _line_of(text, "- missing")


def test_stage_cannot_need_itself(tmp_path: Path) -> None:
    path, _ = _write(
        tmp_path, "name: p\nstages:\n  a: {uses: shell, with: {command: x}, needs: [a]}\n"
    )
    issue = _only(path)
    assert issue.field == "stages.a.needs.0"
    assert issue.line == 3
    assert "cannot need itself" in issue.message


def test_two_stage_cycle(tmp_path: Path) -> None:
    path, text = _write(
        tmp_path,
        """
        name: p
        stages:
          a: {uses: shell, with: {command: x}, needs: [b]}
          b: {uses: shell, with: {command: x}, needs: [a]}
        """,
    )
    issue = _only(path)  # one cycle, reported once
    assert issue.file == str(path)
    assert issue.message.startswith("cycle: ")
    assert issue.message in ("cycle: a -> b -> a", "cycle: b -> a -> b")
    stage = issue.field.split(".")[1]
    assert issue.field == f"stages.{stage}.needs"
    other = "a" if stage == "b" else "b"
    assert issue.line == _line_of(text, f"needs: [{other}]")


def test_three_stage_cycle_names_every_stage(tmp_path: Path) -> None:
    path, _ = _write(
        tmp_path,
        """
        name: p
        stages:
          start: {uses: shell, with: {command: x}}
          a: {uses: shell, with: {command: x}, needs: [start, c]}
          b: {uses: shell, with: {command: x}, needs: [a]}
          c: {uses: shell, with: {command: x}, needs: [b]}
        """,
    )
    issue = _only(path)
    assert issue.message.startswith("cycle: ")
    names = issue.message.removeprefix("cycle: ").split(" -> ")
    assert names[0] == names[-1]
    assert set(names) == {"a", "b", "c"}
    assert len(names) == 4


def test_two_separate_cycles_are_both_reported(tmp_path: Path) -> None:
    path, _ = _write(
        tmp_path,
        """
        name: p
        stages:
          a: {uses: shell, with: {command: x}, needs: [b]}
          b: {uses: shell, with: {command: x}, needs: [a]}
          c: {uses: shell, with: {command: x}, needs: [d]}
          d: {uses: shell, with: {command: x}, needs: [c]}
        """,
    )
    issues = _issues(path)
    cycles = sorted(frozenset(i.message.removeprefix("cycle: ").split(" -> ")) for i in issues)
    assert len(issues) == 2
    assert sorted(map(sorted, cycles)) == [["a", "b"], ["c", "d"]]


def test_diamond_is_not_a_cycle(tmp_path: Path) -> None:
    path, _ = _write(
        tmp_path,
        """
        name: p
        stages:
          top: {uses: shell, with: {command: x}}
          left: {uses: shell, with: {command: x}, needs: [top]}
          right: {uses: shell, with: {command: x}, needs: [top]}
          bottom:
            uses: shell
            needs: [left, right]
            with: {command: "${top.outputs.a} ${left.outputs.b} ${right.outputs.c}"}
        """,
    )
    assert set(load_pipeline(path).stages) == {"top", "left", "right", "bottom"}


# --- templates ---------------------------------------------------------------------------------


def test_template_of_a_stage_that_is_not_needed(tmp_path: Path) -> None:
    path, text = _write(
        tmp_path,
        """
        name: p
        stages:
          make: {uses: python, with: {function: "m:f"}}
          other: {uses: python, with: {function: "m:f"}}
          use:
            uses: python
            needs: [other]
            with:
              function: "m:g"
              x: "value ${make.outputs.x}"
        """,
    )
    issue = _only(path)
    assert issue.file == str(path)
    assert issue.field == "stages.use.with.x"
    assert issue.line == _line_of(text, "x: ")
    assert issue.message.startswith("${make.outputs.x}:")
    assert "'make'" in issue.message and "needs" in issue.message


def test_template_of_a_stage_that_is_needed_only_downstream(tmp_path: Path) -> None:
    # b needs a, so a cannot use b's outputs (b runs after a).
    path, text = _write(
        tmp_path,
        """
        name: p
        stages:
          a: {uses: shell, with: {command: "${b.outputs.x}"}}
          b: {uses: shell, with: {command: x}, needs: [a]}
        """,
    )
    issue = _only(path)
    assert issue.field == "stages.a.with.command"
    assert issue.line == _line_of(text, "a: {")


def test_matrix_template_of_a_stage_that_is_not_needed(tmp_path: Path) -> None:
    path, text = _write(
        tmp_path,
        """
        name: p
        stages:
          make: {uses: python, with: {function: "m:f"}}
          square:
            uses: python
            matrix: {x: "${make.outputs.numbers}"}
            with: {function: "m:g", x: "${matrix.x}"}
        """,
    )
    issue = _only(path)
    assert issue.field == "stages.square.matrix.x"
    assert issue.line == _line_of(text, "matrix: {")
    assert "does not need it" in issue.message


def test_unknown_param(tmp_path: Path) -> None:
    path, text = _write(
        tmp_path,
        """
        name: p
        params: {n: 1, size: big}
        stages:
          a:
            uses: shell
            with:
              command: "run --n ${params.n}"
              env: {SIZE: "${params.zz}"}
        """,
    )
    issue = _only(path)
    assert issue.field == "stages.a.with.env.SIZE"
    assert issue.line == _line_of(text, "params.zz")
    assert issue.message.startswith("${params.zz}: unknown param")
    assert "params: n, size" in issue.message


def test_unknown_param_when_none_are_declared(tmp_path: Path) -> None:
    path, _ = _write(
        tmp_path, 'name: p\nstages:\n  a: {uses: shell, with: {command: "${params}"}}\n'
    )
    issue = _only(path)
    assert issue.field == "stages.a.with.command"
    assert "none declared" in issue.message


def test_unknown_matrix_key(tmp_path: Path) -> None:
    path, text = _write(
        tmp_path,
        """
        name: p
        stages:
          a:
            uses: shell
            matrix: {x: [1, 2], z: [3]}
            with:
              command: "echo ${matrix.x}"
              cwd: "/data/${matrix.y}"
        """,
    )
    issue = _only(path)
    assert issue.field == "stages.a.with.cwd"
    assert issue.line == _line_of(text, "cwd:")
    assert issue.message.startswith("${matrix.y}: unknown matrix key")
    assert "x, z" in issue.message


def test_matrix_template_in_a_stage_without_matrix(tmp_path: Path) -> None:
    path, _ = _write(
        tmp_path, 'name: p\nstages:\n  a: {uses: shell, with: {command: "${matrix.y}"}}\n'
    )
    issue = _only(path)
    assert issue.field == "stages.a.with.command"
    assert "this stage has no matrix" in issue.message


def test_matrix_cannot_refer_to_itself(tmp_path: Path) -> None:
    path, _ = _write(
        tmp_path,
        'name: p\nstages:\n  a: {uses: shell, matrix: {x: [1], y: "${matrix.x}"}, '
        'with: {command: "x"}}\n',
    )
    issue = _only(path)
    assert issue.field == "stages.a.matrix.y"
    assert "cannot refer to itself" in issue.message


def test_matrix_entry_must_be_a_list(tmp_path: Path) -> None:
    path, _ = _write(
        tmp_path,
        'name: p\nstages:\n  a: {uses: shell, matrix: {x: [1], y: 3}, with: {command: "x"}}\n',
    )
    issue = _only(path)
    assert issue.field == "stages.a.matrix.y"
    assert issue.line == 3
    assert "must be a list" in issue.message


@pytest.mark.parametrize(
    ("template", "fragment"),
    [
        ("${run.nope}", "unknown run field"),
        ("${run}", "unknown run field"),
        ("${make.result}", "${make.outputs.<key>}"),
        ("${make}", "${make.outputs.<key>}"),
        ("${a.outputs.x}", "cannot use its own outputs"),
        ("${zz.outputs.x}", "unknown stage or scope 'zz'"),
    ],
)
def test_bad_references(tmp_path: Path, template: str, fragment: str) -> None:
    path, _ = _write(
        tmp_path,
        f"""
        name: p
        stages:
          make: {{uses: shell, with: {{command: x}}}}
          a: {{uses: shell, needs: [make], with: {{command: "echo {template}"}}}}
        """,
    )
    issue = _only(path)
    assert issue.field == "stages.a.with.command"
    assert issue.line == 4
    assert issue.message.startswith(f"{template}:")
    assert fragment in issue.message


def test_escaped_template_is_not_checked(tmp_path: Path) -> None:
    path, _ = _write(
        tmp_path, 'name: p\nstages:\n  a: {uses: shell, with: {command: "echo $${nope.x}"}}\n'
    )
    assert load_pipeline(path).stages["a"].with_["command"] == "echo $${nope.x}"


def test_template_in_a_nested_list_is_located(tmp_path: Path) -> None:
    path, text = _write(
        tmp_path,
        """
        name: p
        stages:
          a:
            uses: shell
            with:
              command:
                - echo
                - ok
                - "${params.missing}"
        """,
    )
    issue = _only(path)
    assert issue.field == "stages.a.with.command.2"
    assert issue.line == _line_of(text, "params.missing")


# --- executors ---------------------------------------------------------------------------------


def test_unknown_executor(tmp_path: Path) -> None:
    path, text = _write(
        tmp_path,
        """
        name: p
        stages:
          a:
            uses: nope
            with: {anything: 1}
        """,
    )
    issue = _only(path)
    assert issue.file == str(path)
    assert issue.field == "stages.a.uses"
    assert issue.line == _line_of(text, "uses: nope")
    assert "unknown executor 'nope'" in issue.message
    assert "python" in issue.message and "shell" in issue.message


def test_shell_without_command(tmp_path: Path) -> None:
    path, text = _write(
        tmp_path,
        """
        name: p
        stages:
          a: {uses: shell, with: {cwd: /tmp}}
        """,
    )
    issue = _only(path)
    assert issue.field == "stages.a.with.command"
    assert issue.line == _line_of(text, "a: {")
    assert "required" in issue.message.lower()


def test_shell_unknown_param(tmp_path: Path) -> None:
    path, text = _write(
        tmp_path,
        """
        name: p
        stages:
          a:
            uses: shell
            with:
              command: x
              enviroment: {A: b}
        """,
    )
    issue = _only(path)
    assert issue.field == "stages.a.with.enviroment"
    assert issue.line == _line_of(text, "enviroment")
    assert "extra" in issue.message.lower()


def test_shell_wrong_literal_type(tmp_path: Path) -> None:
    path, text = _write(
        tmp_path,
        """
        name: p
        stages:
          a:
            uses: shell
            with:
              command: x
              env: {A: 1}
        """,
    )
    issue = _only(path)
    assert issue.field == "stages.a.with.env.A"
    assert issue.line == _line_of(text, "env:")


def test_python_function_without_colon(tmp_path: Path) -> None:
    path, text = _write(
        tmp_path,
        """
        name: p
        stages:
          a:
            uses: python
            with:
              function: "nocolon"
              extra_kwarg: 1
        """,
    )
    issue = _only(path)
    assert issue.file == str(path)
    assert issue.field == "stages.a.with.function"
    assert issue.line == _line_of(text, "nocolon")
    assert "pattern" in issue.message


def test_python_without_function(tmp_path: Path) -> None:
    path, _ = _write(tmp_path, "name: p\nstages:\n  a: {uses: python, with: {x: 1}}\n")
    issue = _only(path)
    assert issue.field == "stages.a.with.function"
    assert issue.line == 3


def test_templated_executor_params_are_left_for_the_run(tmp_path: Path) -> None:
    path, _ = _write(
        tmp_path,
        """
        name: p
        params: {fn: "m:f", env: {A: b}, cmd: [echo, hi]}
        stages:
          a: {uses: python, with: {function: "${params.fn}"}}
          b: {uses: shell, with: {command: "${params.cmd}", env: "${params.env}"}}
        """,
    )
    assert set(load_pipeline(path).stages) == {"a", "b"}


# --- field-level errors ------------------------------------------------------------------------


def test_bad_duration(tmp_path: Path) -> None:
    path, text = _write(
        tmp_path,
        """
        name: p
        stages:
          a:
            uses: shell
            with: {command: x}
            timeout: 10x
        """,
    )
    issue = _only(path)
    assert issue.file == str(path)
    assert issue.field == "stages.a.timeout"
    assert issue.line == _line_of(text, "timeout: 10x")
    assert issue.column == text.splitlines()[issue.line - 1].index("10x") + 1
    # pydantic's "Value error, " prefix is stripped; our message is kept.
    assert issue.message == "invalid duration '10x': expected e.g. 500ms, 10s, 5m, 1h30m"


@pytest.mark.parametrize(
    ("retry", "field", "fragment"),
    [
        ("{max_attempts: 0}", "stages.a.retry.max_attempts", "greater than or equal to 1"),
        ("{backoff: 0.5}", "stages.a.retry.backoff", "greater than or equal to 1"),
        ("{initial_interval: soon}", "stages.a.retry.initial_interval", "invalid duration"),
        ("{max_intervall: 5s}", "stages.a.retry.max_intervall", "Extra inputs"),
        ("{max_attempts: many}", "stages.a.retry.max_attempts", "integer"),
    ],
)
def test_bad_retry_field(tmp_path: Path, retry: str, field: str, fragment: str) -> None:
    path, text = _write(
        tmp_path,
        f"""
        name: p
        stages:
          a:
            uses: shell
            with: {{command: x}}
            retry: {retry}
        """,
    )
    issue = _only(path)
    assert issue.file == str(path)
    assert issue.field == field
    assert issue.line == _line_of(text, "retry:")
    assert fragment in issue.message


def test_unknown_stage_field(tmp_path: Path) -> None:
    path, text = _write(
        tmp_path,
        """
        name: p
        stages:
          a: {uses: shell, with: {command: x}}
          b:
            uses: shell
            with: {command: x}
            neeeds: [a]
        """,
    )
    issue = _only(path)
    assert issue.file == str(path)
    assert issue.field == "stages.b.neeeds"
    assert issue.line == _line_of(text, "neeeds")
    assert "Extra inputs are not permitted" in issue.message


def test_unknown_top_level_field(tmp_path: Path) -> None:
    path, _ = _write(
        tmp_path,
        "name: p\nstage:\n  a: {uses: shell}\nstages:\n  a: {uses: shell, with: {command: x}}\n",
    )
    issue = _only(path)
    assert issue.field == "stage"


def test_invalid_cron_schedule(tmp_path: Path) -> None:
    path, text = _write(
        tmp_path,
        """
        name: p
        schedule: "every day at six"
        stages:
          a: {uses: shell, with: {command: x}}
        """,
    )
    issue = _only(path)
    assert issue.file == str(path)
    assert issue.field == "schedule"
    assert issue.line == _line_of(text, "schedule:")
    assert "invalid cron expression 'every day at six'" in issue.message


@pytest.mark.parametrize("name", ["params", "matrix", "run"])
def test_reserved_stage_name(tmp_path: Path, name: str) -> None:
    path, _ = _write(
        tmp_path,
        f"""
        name: p
        stages:
          {name}: {{uses: shell, with: {{command: x}}}}
        """,
    )
    issue = _only(path)
    assert issue.file == str(path)
    assert issue.field.startswith("stages")
    assert issue.line == 3
    assert f"stage name {name!r} is reserved" in issue.message


def test_reserved_stage_name_points_at_that_stage(tmp_path: Path) -> None:
    path, text = _write(
        tmp_path,
        """
        name: p
        stages:
          first: {uses: shell, with: {command: x}}
          params: {uses: shell, with: {command: x}}
        """,
    )
    issue = _only(path)
    assert issue.line == _line_of(text, "params:")
    assert issue.column == 3  # the stage's name, not its `{`
    assert issue.field == "stages.params"
    assert issue.message == "stage name 'params' is reserved for templates"


def test_every_bad_stage_name_is_reported_at_its_own_key(tmp_path: Path) -> None:
    path, text = _write(
        tmp_path,
        """
        name: p
        stages:
          good: {uses: shell, with: {command: x}}
          1st:
            uses: shell
            with: {command: x}
          run: {uses: shell, with: {command: x}}
        """,
    )
    issues = _issues(path)
    assert {(i.field, i.line, i.column) for i in issues} == {
        ("stages.1st", _line_of(text, "1st:"), 3),
        ("stages.run", _line_of(text, "run:"), 3),
    }


def test_stage_name_errors_from_the_python_api_name_the_stage() -> None:
    with pytest.raises(ValidationError) as info:
        Pipeline(name="p", stages={"ok": Stage(uses="shell"), "matrix": Stage(uses="shell")})
    assert [e["loc"] for e in info.value.errors()] == [("stages", "matrix", "[key]")]


@pytest.mark.parametrize("name", ["1abc", "_x", "a b", "a.b"])
def test_invalid_stage_name(tmp_path: Path, name: str) -> None:
    path, _ = _write(
        tmp_path, f'name: p\nstages:\n  "{name}": {{uses: shell, with: {{command: x}}}}\n'
    )
    issue = _only(path)
    assert issue.field == f"stages.{name}"
    assert (issue.line, issue.column) == (3, 3)
    assert f"invalid stage name {name!r}" in issue.message


@pytest.mark.parametrize("name", ["1p", "my pipeline", ""])
def test_invalid_pipeline_name(tmp_path: Path, name: str) -> None:
    path, _ = _write(
        tmp_path, f'name: "{name}"\nstages:\n  a: {{uses: shell, with: {{command: x}}}}\n'
    )
    issue = _only(path)
    assert issue.field == "name"
    assert issue.line == 1


def test_invalid_queue_and_tag(tmp_path: Path) -> None:
    path, text = _write(
        tmp_path,
        """
        name: p
        stages:
          a:
            uses: shell
            with: {command: x}
            queue: "gpu queue"
            tags: [ok, "not ok"]
        """,
    )
    issues = _issues(path)
    assert _one(issues, "stages.a.queue").line == _line_of(text, "queue:")
    assert "invalid queue name" in _one(issues, "stages.a.queue").message
    assert "invalid tag 'not ok'" in _one(issues, "stages.a.tags").message


def test_no_stages(tmp_path: Path) -> None:
    path, _ = _write(tmp_path, "name: p\nstages: {}\n")
    issue = _only(path)
    assert issue.field == "stages"
    assert issue.line == 2


def test_missing_required_fields(tmp_path: Path) -> None:
    path, _ = _write(tmp_path, "description: nothing else\n")
    issues = _issues(path)
    assert {i.field for i in issues} == {"name", "stages"}
    assert all(i.message == "Field required" for i in issues)


def test_missing_uses_in_a_flow_stage(tmp_path: Path) -> None:
    path, _ = _write(tmp_path, "name: p\nstages:\n  a: {needs: []}\n")
    issue = _only(path)
    assert issue.field == "stages.a.uses"
    assert issue.line == 3


def test_missing_uses_in_a_block_stage_points_at_the_stage(tmp_path: Path) -> None:
    path, text = _write(
        tmp_path,
        """
        name: p
        stages:
          a:
            needs: []
        """,
    )
    issue = _only(path)
    assert issue.field == "stages.a.uses"
    assert issue.line == _line_of(text, "a:")
    assert issue.column == 3


@pytest.mark.parametrize("value", [".nan", ".inf"])
def test_non_finite_timeout_is_rejected(tmp_path: Path, value: str) -> None:
    path, _ = _write(
        tmp_path,
        f"name: p\nstages:\n  a: {{uses: shell, with: {{command: x}}, timeout: {value}}}\n",
    )
    issue = _only(path)
    assert issue.field == "stages.a.timeout"
    assert "must be a finite number of seconds" in issue.message


# --- multiple problems, file-level errors ------------------------------------------------------


def test_field_problems_are_reported_together(tmp_path: Path) -> None:
    path, text = _write(
        tmp_path,
        """
        name: p
        schedule: "nope"
        stages:
          a:
            uses: shell
            with: {command: x}
            timeout: 10x
            neeeds: []
          b:
            uses: shell
            with: {command: x}
            retry: {max_attempts: 0}
        """,
    )
    with pytest.raises(SpecError) as info:
        load_pipeline(path)
    issues = info.value.issues
    assert {i.field: i.line for i in issues} == {
        "schedule": _line_of(text, "schedule:"),
        "stages.a.timeout": _line_of(text, "timeout:"),
        "stages.a.neeeds": _line_of(text, "neeeds:"),
        "stages.b.retry.max_attempts": _line_of(text, "retry:"),
    }
    assert all(i.file == str(path) for i in issues)
    message = str(info.value)
    assert message.startswith("invalid pipeline spec (4 problems):")
    for issue in issues:
        assert f"  {issue}" in message
        assert f"{path}:{issue.line}:" in str(issue)


def test_cross_stage_problems_are_reported_together(tmp_path: Path) -> None:
    path, text = _write(
        tmp_path,
        """
        name: p
        params: {n: 1}
        stages:
          a: {uses: nope}
          b: {uses: shell, needs: [zz], with: {command: "${params.q}"}}
          c: {uses: python, needs: [d], with: {function: "nocolon"}}
          d: {uses: python, needs: [c], with: {function: "m:f", x: "${b.outputs.y}"}}
        """,
    )
    issues = _issues(path)
    lines = {i.field: i.line for i in issues}
    assert lines["stages.a.uses"] == _line_of(text, "a: {")
    assert lines["stages.b.needs.0"] == _line_of(text, "b: {")
    assert lines["stages.b.with.command"] == _line_of(text, "b: {")
    assert lines["stages.c.with.function"] == _line_of(text, "c: {")
    assert lines["stages.d.with.x"] == _line_of(text, "d: {")
    cycle = [i for i in issues if i.message.startswith("cycle: ")]
    assert len(cycle) == 1
    assert len(issues) == 6


def test_field_and_cross_stage_problems_are_reported_together(tmp_path: Path) -> None:
    path, _ = _write(
        tmp_path,
        """
        name: p
        stages:
          a: {uses: shell, with: {command: x}, timeout: 10x}
          b: {uses: nope}
        """,
    )
    issues = _issues(path)
    assert {i.field: i.line for i in issues} == {"stages.a.timeout": 3, "stages.b.uses": 4}


def test_cross_stage_checks_still_run_around_a_stage_with_a_field_error(tmp_path: Path) -> None:
    path, _ = _write(
        tmp_path,
        """
        name: p
        stages:
          a: {uses: shell, with: {command: x}, retry: {max_attempts: 0}}
          b: {uses: shell, needs: [a, zz], with: {command: "${a.outputs.x} ${params.q}"}}
        """,
    )
    issues = _issues(path)
    assert {i.field for i in issues} == {
        "stages.a.retry.max_attempts",
        "stages.b.needs.1",
        "stages.b.with.command",
    }
    assert len(issues) == 3  # reported once each


def test_one_problem_says_problem(tmp_path: Path) -> None:
    path, _ = _write(tmp_path, "name: p\nstages:\n  a: {uses: nope}\n")
    with pytest.raises(SpecError, match=r"invalid pipeline spec \(1 problem\):"):
        load_pipeline(path)


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"
    issue = _only(path)
    assert issue.file == str(path)
    assert issue.line is None
    assert "cannot read" in issue.message


def test_empty_file(tmp_path: Path) -> None:
    path, _ = _write(tmp_path, "")
    issue = _only(path)
    assert (issue.file, issue.line, issue.message) == (str(path), 1, "the file is empty")


def test_yaml_syntax_error(tmp_path: Path) -> None:
    path, _ = _write(tmp_path, "name: p\nstages:\n  a: {uses: shell\n")
    issue = _only(path)
    assert issue.file == str(path)
    assert issue.line == 4
    assert issue.message.startswith("YAML syntax error")


def test_duplicate_key_fails_the_load(tmp_path: Path) -> None:
    path, text = _write(
        tmp_path,
        """
        name: p
        stages:
          a: {uses: shell, with: {command: x}}
          a: {uses: python, with: {function: "m:f"}}
        """,
    )
    issue = _only(path)
    assert issue.field == "stages.a"
    assert issue.line == _line_of(text, "uses: python")
    assert issue.message == "duplicate key"


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", "42\n"])
def test_spec_must_be_a_mapping(tmp_path: Path, text: str) -> None:
    path, _ = _write(tmp_path, text)
    issue = _only(path)
    assert issue.line == 1
    assert "must be a mapping" in issue.message


def test_parse_pipeline_uses_the_given_filename() -> None:
    with pytest.raises(SpecError) as info:
        parse_pipeline("name: p\nstages:\n  a: {uses: nope}\n", "inline.yaml")
    assert info.value.issues[0].file == "inline.yaml"
    with pytest.raises(SpecError) as info:
        parse_pipeline("name: p\nstages:\n  a: {uses: nope}\n")
    assert info.value.issues[0].file == "<string>"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("name: a\x07\nstages: {}\n", "<string>:1:8: character U+0007 is not allowed"),
        ("- just\n- a list\n", "a pipeline spec must be a mapping"),
        ("name: x\nstages: 3\n", "stages"),
    ],
)
def test_malformed_documents_are_spec_errors(text: str, expected: str) -> None:
    with pytest.raises(SpecError) as caught:
        parse_pipeline(text)
    assert expected in str(caught.value)


def test_when_without_needs_is_located(tmp_path: Path) -> None:
    path, text = _write(
        tmp_path,
        """
        name: p
        stages:
          alert:
            uses: python
            when: failure
            with: {function: "m:f"}
        """,
    )
    [issue] = _issues(path)
    assert (issue.line, issue.field) == (_line_of(text, "when:"), "stages.alert.when")
    assert "needs" in issue.message


def test_unknown_when_value_is_located(tmp_path: Path) -> None:
    path, text = _write(
        tmp_path,
        """
        name: p
        stages:
          a: {uses: python, with: {function: "m:f"}}
          b:
            uses: python
            needs: [a]
            when: sometimes
            with: {function: "m:f"}
        """,
    )
    [issue] = _issues(path)
    assert (issue.line, issue.field) == (_line_of(text, "sometimes"), "stages.b.when")
