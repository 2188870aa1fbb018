"""Bad `aggregate`/`load` parameters are refused by `stageflow validate`, with line and field."""

from __future__ import annotations

import pytest

from stageflow.errors import SpecError
from stageflow.executors.aggregate import AggregateExecutor
from stageflow.executors.load import LoadExecutor
from stageflow.spec.validate import parse_pipeline

SPEC = """\
name: lake
stages:
  make:
    uses: python
    with: {function: "m:f"}
  agg:
    uses: aggregate
    needs: [make]
    with:
      inputs: ${make.outputs.data}
      group_by: [key, "bad name"]
      aggregations:
        value: "mode(value)"
        ok: "mean(value)"
      dataset: ../../etc
  put:
    uses: load
    needs: [make]
    with:
      data: ${make.outputs.data}
      table: gold.scores
      date: "2026-13-01"
      mode: upsert
"""


def test_bad_lake_parameters_are_reported_with_their_line_and_field() -> None:
    with pytest.raises(SpecError) as info:
        parse_pipeline(SPEC, "lake.yaml")
    found = {issue.field: issue for issue in info.value.issues}
    lines = SPEC.splitlines()

    def line_of(text: str) -> int:
        return next(i for i, line in enumerate(lines, 1) if text in line)

    expected = {
        "stages.agg.with.group_by": ("group_by: [key", "not a column name"),
        "stages.agg.with.aggregations": ("aggregations:", "mode(value)"),
        "stages.agg.with.dataset": ("dataset: ../../etc", "lowercase name"),
        "stages.put.with.table": ("table: gold.scores", "already names the lake's own"),
        "stages.put.with.date": ('date: "2026-13-01"', "YYYY-MM-DD"),
        "stages.put.with.mode": ("mode: upsert", "overwrite"),
    }
    for field, (text, message) in expected.items():
        assert field in found, f"{field} not in {sorted(found)}"
        assert found[field].file == "lake.yaml"
        assert found[field].line == line_of(text), (field, str(found[field]))
        assert message in found[field].message, str(found[field])


def test_good_and_templated_parameters_pass() -> None:
    assert (
        AggregateExecutor.check_params(
            {
                "inputs": "${a.outputs.data}",
                "group_by": ["key"],
                "aggregations": {"n": "count(*)", "v": "count_distinct(value)"},
                "table": "prod.results",
                "date": "${run.date}",
            }
        )
        == []
    )
    assert LoadExecutor.check_params({"data": "${a.outputs.x}", "dataset": "raw"}) == []
    problems = LoadExecutor.check_params({"data": "${a.outputs.x}"})
    assert problems and "dataset" in problems[0][1]
    problems = AggregateExecutor.check_params(
        {"inputs": "x", "aggregations": {"v": "sum(*)"}, "dataset": "d"}
    )
    assert problems and "only count takes *" in problems[0][1]
