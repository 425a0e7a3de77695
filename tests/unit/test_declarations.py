"""Declare once, derive the rest: WindowAgg's fields (domain/aggregates.py) and the dimensions
(domain.entities.DIMENSION_FIELDS) are the only lists; the arithmetic, the ClickHouse columns, the row encoder
and decoder, the merge expressions and the metrics-topic record follow from them. Shown by declaring one more
metric and one more dimension, and by checking that the Avro schemas agree with the declarations.
(The same against ClickHouse itself: tests/unit/test_declarations_store.py.)"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from domain import entities
from domain.aggregate_fields import (
    Count,
    Declared,
    Figure,
    Histogram,
    Share,
    Sketch,
    Sum,
    count,
    declared_fields,
    declared_figures,
    figures_reader,
    with_arithmetic,
)
from domain.aggregates import WINDOW_AGG_FIELDS, WindowAgg, duration_agg, published_figures, rating_agg
from domain.records import CommonFields
from domain.windows import CellRow
from satpulse import codec
from satpulse.settings import Settings
from sinks.declared_columns import CELLS, KEY_COLUMNS, VERSION_COLUMNS, CellLayout, dimension_columns

# the window_metric fields that describe the window, not its aggregate
ENVELOPE = {"window_start", "window_seconds", "dimension", "dimension_value", "is_final", "emitted_at"}


@with_arithmetic
@dataclass(slots=True)
class WithPromoters(WindowAgg):
    """WindowAgg with one more metric: the whole change a new metric needs in code."""

    promoters: int = count(Share("promoter_percent", of="rated"))


def aggs(cls: type[WindowAgg]) -> st.SearchStrategy[Any]:
    """Aggregates of ``cls`` with every declared field drawn by its kind (sketch counts never 0: zero counts are
    never held)."""
    by_kind: dict[type, Any] = {
        Count: lambda f: st.integers(0, 10**12), Sum: lambda f: st.integers(0, 10**15),
        Histogram: lambda f: st.lists(st.integers(0, 10**6), min_size=f.kind.buckets, max_size=f.kind.buckets),
        Sketch: lambda f: st.dictionaries(st.integers(0, 3000), st.integers(1, 10**6), max_size=6)}
    return st.builds(cls, **{f.name: by_kind[type(f.kind)](f) for f in declared_fields(cls)})


def reference_add_scaled(target: Any, other: Any, sign: int) -> None:
    """add_scaled as a plain loop over the declaration: what the compiled one must equal."""
    for f in declared_fields(type(target)):
        mine, theirs = getattr(target, f.name), getattr(other, f.name)
        if isinstance(f.kind, Count | Sum):
            setattr(target, f.name, mine + sign * theirs)
        elif isinstance(f.kind, Histogram):
            setattr(target, f.name, [a + sign * b for a, b in zip(mine, theirs, strict=True)])
        else:
            summed = {k: mine.get(k, 0) + sign * theirs.get(k, 0) for k in {*mine, *theirs}}
            setattr(target, f.name, {k: v for k, v in summed.items() if v})


def selected(layout: CellLayout[Any], row: tuple[Any, ...]) -> list[Any]:
    """What ``layout.single_sql`` selects from a stored row, picked by column name (a sketch: (keys, counts))."""
    by_name = dict(zip(layout.columns, row, strict=True))
    return [(by_name[f"{f.name}_keys"], by_name[f"{f.name}_counts"]) if isinstance(f.kind, Sketch)
            else by_name[f.name] for f in layout.fields]


def avro_type(figure: Figure) -> Any:
    if figure.optional:
        return ["null", "double"]
    return "long" if figure.integer else "double"


# --- the declaration of WindowAgg -------------------------------------------------------------------------------
def test_the_declaration_is_the_column_order_on_disk() -> None:
    """Behaviour unchanged: the derived columns are the ones migration 1 created, in its order."""
    assert CELLS.columns == (
        *KEY_COLUMNS, "rated", "satisfied", "scored", "score_micros", "score_hist", "created", "reopened",
        "first_responses", "first_response_ms", "first_response_sketch_keys", "first_response_sketch_counts",
        "first_response_breaches", "resolved", "resolution_ms", "resolution_sketch_keys",
        "resolution_sketch_counts", "resolution_breaches", *VERSION_COLUMNS)


def test_a_field_without_a_kind_is_refused() -> None:
    @dataclass
    class Plain:
        rated: int = 0

    with pytest.raises(TypeError, match=r"Plain\.rated has no kind"):
        declared_fields(Plain)


@settings(max_examples=200, deadline=None)
@given(aggs(WindowAgg), aggs(WindowAgg), st.integers(-3, 3))
def test_compiled_add_scaled_equals_the_loop_over_the_declaration(a: WindowAgg, b: WindowAgg, sign: int) -> None:
    expected = a.copy()
    reference_add_scaled(expected, b, sign)
    a.add_scaled(b, sign)
    assert a == expected


@settings(max_examples=200, deadline=None)
@given(aggs(WindowAgg), aggs(WindowAgg))
def test_merge_and_subtract_are_exact_inverses(a: WindowAgg, b: WindowAgg) -> None:
    before = a.copy()
    a.merge(b)
    a.subtract(b)
    assert a == before
    b.subtract(b.copy())
    assert b.is_empty()


@settings(max_examples=200, deadline=None)
@given(aggs(WindowAgg))
def test_copy_is_equal_and_independent(a: WindowAgg) -> None:
    copied = a.copy()
    assert copied == a and copied is not a and copied.score_hist is not a.score_hist
    copied.merge(rating_agg(True, 5.0))
    assert copied != a


@settings(max_examples=200, deadline=None)
@given(aggs(WindowAgg), st.text(max_size=20), st.integers(0, 2**32 - 1), st.integers(0, 2**40))
def test_a_cell_row_decodes_to_its_aggregate(agg: WindowAgg, value: str, start_s: int, version: int) -> None:
    row = CELLS.row(CellRow(("t", 3), ("team", value, start_s * 1000), agg, version), 60, 1_700_000_000)
    by_name = dict(zip(CELLS.columns, row, strict=True))
    assert (by_name["dimension_value"], by_name["window_start"], by_name["version"]) == (value, start_s, version)
    assert CELLS.decode(selected(CELLS, row)) == agg


def test_histogram_of_a_row_stored_before_it_existed_reads_as_zeros() -> None:
    values = selected(CELLS, CELLS.row(CellRow(("t", 0), ("all", "all", 0), WindowAgg(), 0), 60, 0))
    values[[f.name for f in CELLS.fields].index("score_hist")] = []  # ClickHouse's default of a new Array column
    assert CELLS.decode(values) == WindowAgg()


def test_merge_expressions_follow_the_kinds() -> None:
    assert CELLS.merged_exprs[:5] == ("sum(rated)", "sum(satisfied)", "sum(scored)", "sum(score_micros)",
                                      "sumForEach(score_hist)")
    assert "sumMap(resolution_sketch_keys, resolution_sketch_counts)" in CELLS.merged_exprs
    assert "(resolution_sketch_keys, resolution_sketch_counts)" in CELLS.single_sql


def test_the_window_metric_schema_agrees_with_the_declaration() -> None:
    """schemas/window_metric.avsc carries exactly the figures WindowAgg declares (beside the window's own
    fields), with the Avro type of each; a new metric's figures are added there with a default."""
    schema = {f["name"]: f["type"] for f in codec.schema_json(codec.WINDOW_METRIC)["fields"]}
    declared = {figure.name: avro_type(figure) for figure in declared_figures(WINDOW_AGG_FIELDS)}
    aggregate = {name: type_ for name, type_ in schema.items() if name not in ENVELOPE}
    missing = [{"name": name, "type": type_, "default": 0 if type_ == "long" else None}
               for name, type_ in declared.items() if name not in aggregate]
    assert aggregate == declared, f"add to schemas/window_metric.avsc (with a doc): {json.dumps(missing)}"


def test_the_published_record_encodes_with_the_schema() -> None:
    agg = rating_agg(True, 4.0)
    agg.merge(duration_agg("resolution", 90_000, True))
    record = {"window_start": 0, "window_seconds": 60, "dimension": "all", "dimension_value": "all",
              "is_final": True, "emitted_at": 1, **published_figures(agg)}
    _, decoded = codec.decode(codec.encode(codec.WINDOW_METRIC, record))
    assert decoded == record
    assert decoded["csat_percent"] == agg.csat_percent == 100.0
    assert decoded["resolution_mean_seconds"] == agg.mean_resolution_seconds == 90.0
    assert decoded["resolution_p90_seconds"] == agg.resolution_quantile_seconds(0.9)


# --- one more metric: one declaration ---------------------------------------------------------------------------
def test_one_more_metric_is_one_declaration() -> None:
    fields = declared_fields(WithPromoters)
    assert fields[-1] == Declared("promoters", Count((Share("promoter_percent", of="rated"),)))
    layout = CellLayout(WithPromoters)
    assert layout.columns[-3:] == ("promoters", *VERSION_COLUMNS)
    assert layout.agg_columns[-1].type == "UInt64" and layout.merged_exprs[-1] == "sum(promoters)"
    assert layout.single_sql.endswith(", promoters")
    assert [f.name for f in declared_figures(fields)][-2:] == ["promoters", "promoter_percent"]

    a = WithPromoters(rated=4, satisfied=3, promoters=2)
    a.merge(WithPromoters(rated=1, promoters=1))
    assert (a.rated, a.promoters) == (5, 3)
    assert figures_reader(fields)(a)["promoter_percent"] == 60.0
    row = layout.row(CellRow(("t", 0), ("all", "all", 60_000), a, 7), 60, 0)
    assert dict(zip(layout.columns, row, strict=True))["promoters"] == 3
    assert layout.decode(selected(layout, row)) == a


@settings(max_examples=100, deadline=None)
@given(aggs(WithPromoters), aggs(WithPromoters))
def test_one_more_metric_merges_subtracts_and_round_trips(a: WithPromoters, b: WithPromoters) -> None:
    layout = CellLayout(WithPromoters)
    before = a.copy()
    a.merge(b)
    assert a.promoters == before.promoters + b.promoters
    a.subtract(b)
    assert a == before
    assert layout.decode(selected(layout, layout.row(CellRow(("t", 0), ("all", "all", 0), a, 0), 60, 0))) == a


# --- dimensions -------------------------------------------------------------------------------------------------
def test_every_dimension_is_a_field_of_both_clean_events() -> None:
    """A dimension is read from the clean record by name: the clean event schemas and records must carry it."""
    for name in (codec.FEEDBACK_EVENT, codec.TICKET_EVENT):
        fields = {f["name"] for f in codec.schema_json(name)["fields"]}
        assert set(entities.DIMENSION_FIELDS) <= fields, (name, set(entities.DIMENSION_FIELDS) - fields)
    assert set(entities.DIMENSION_FIELDS) <= set(CommonFields.__annotations__)


def test_settings_refuse_an_unknown_dimension() -> None:
    with pytest.raises(ValidationError, match=r"unknown dimension\(s\) 'chanel': each must be 'all' or one of "
                                              r"channel, team"):
        Settings(dimensions=["all", "chanel"])
    assert Settings().dimensions == ["all", *entities.DIMENSION_FIELDS]


def test_one_more_dimension_is_one_declaration(monkeypatch: pytest.MonkeyPatch) -> None:
    """What reads dimensions reads them from DIMENSION_FIELDS by name: settings accept the new one, entities
    carry its value into the cell keys, the event tables get its column (the store side, against ClickHouse:
    tests/unit/test_declarations_store.py)."""
    import satpulse.settings

    declared = (*entities.DIMENSION_FIELDS, "region")
    monkeypatch.setattr(entities, "DIMENSION_FIELDS", declared)
    monkeypatch.setattr(satpulse.settings, "DIMENSION_FIELDS", declared)
    assert Settings(dimensions=["all", "region"]).dimensions == ["all", "region"]
    record = {"rating_version": 1, "event_id": "e1", "event_time": 61_000, "channel": "chat", "region": "emea",
              "satisfied": True, "score": 5.0}
    state = entities.rating_state(record)
    assert ("region", "emea") in state.dims
    [(key, agg)] = entities.rating_contribution(state, ["region"], 60_000)
    assert key == ("region", "emea", 60_000) and agg.rated == 1
    assert dimension_columns(declared)[-1].name == "region"


def test_an_aggregate_minus_itself_is_empty() -> None:
    agg = duration_agg("resolution", 5000, True)
    agg.merge(duration_agg("first_response", 700, False))
    agg.subtract(agg)
    assert agg.is_empty()
