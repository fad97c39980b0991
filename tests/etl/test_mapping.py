"""Header → column mapping (flaskstream/etl/mapping.py): every error before any row."""

from __future__ import annotations

import pytest

from flaskstream.etl.mapping import (
    MappingError,
    MissingColumns,
    TableColumn,
    TargetTable,
    UnknownColumns,
    UnwritableColumns,
    plan_load,
    quote_ident,
)
from flaskstream.etl.pgtypes import parse_type

CUSTOMERS = TargetTable("public", "customers", (
    TableColumn("id", parse_type("bigint"), not_null=True, identity="always"),
    TableColumn("ref", parse_type("bigint"), not_null=True, identity="by default"),
    TableColumn("email", parse_type("varchar(254)"), not_null=True),
    TableColumn("first_name", parse_type("text")),
    TableColumn("age", parse_type("smallint")),
    TableColumn("created", parse_type("timestamptz"), not_null=True, has_default=True),
    TableColumn("search", parse_type("text"), generated=True),
    TableColumn("spot", None, type_name="point"),
), primary_key=("id",))


def names(plan_columns: tuple[TableColumn, ...]) -> list[str]:
    return [c.name for c in plan_columns]


def test_exact_then_case_and_space_insensitive() -> None:
    plan = plan_load(CUSTOMERS, ["EMAIL", " First Name ", "age"])
    assert names(plan.targets) == ["email", "first_name", "age"]
    assert plan.sources == (0, 1, 2) and plan.width == 3
    assert plan.defaulted == ("ref", "created", "spot")


def test_exact_name_wins_over_folded_and_ambiguity_is_an_error() -> None:
    table = TargetTable("s", "t", (TableColumn("Email", parse_type("text")),
                                   TableColumn("email", parse_type("text"))))
    assert names(plan_load(table, ["Email"]).targets) == ["Email"]
    with pytest.raises(MappingError, match="'EMAIL' matches columns 'Email', 'email'"):
        plan_load(table, ["EMAIL"])


def test_map_overrides_by_header_text() -> None:
    plan = plan_load(CUSTOMERS, ["e-mail", "name"], overrides={"e-mail": "email", "name": "first_name"})
    assert names(plan.targets) == ["email", "first_name"]


def test_map_to_a_missing_column_or_from_a_missing_field() -> None:
    with pytest.raises(UnknownColumns, match="no column 'mail'") as info:
        plan_load(CUSTOMERS, ["e-mail"], overrides={"e-mail": "mail"})
    assert info.value.columns == ("mail",)
    with pytest.raises(UnknownColumns, match="'mail' the CSV does not have"):
        plan_load(CUSTOMERS, ["email"], overrides={"mail": "email"})


def test_headerless_file_with_columns_list_maps_the_same_way() -> None:
    plan = plan_load(CUSTOMERS, ["age", "email"])
    assert names(plan.targets) == ["age", "email"] and plan.sources == (0, 1)


def test_unknown_field_is_an_error_naming_it_or_skipped() -> None:
    with pytest.raises(UnknownColumns, match="field\\(s\\) 'nickname', 'zip'") as info:
        plan_load(CUSTOMERS, ["email", "nickname", "zip"])
    assert info.value.columns == ("nickname", "zip") and info.value.code == "UNKNOWN_COLUMN"
    plan = plan_load(CUSTOMERS, ["email", "nickname", "age"], ignore_extra=True)
    assert names(plan.targets) == ["email", "age"] and plan.sources == (0, 2)
    assert plan.skipped == ("nickname",)


def test_missing_not_null_without_default_is_an_error() -> None:
    with pytest.raises(MissingColumns, match="NOT NULL column\\(s\\) 'email'") as info:
        plan_load(CUSTOMERS, ["first_name", "age"])
    assert info.value.columns == ("email",)


def test_identity_always_and_generated_are_never_written() -> None:
    with pytest.raises(UnwritableColumns, match="'id', 'search'"):
        plan_load(CUSTOMERS, ["id", "email", "search"])
    plan = plan_load(CUSTOMERS, ["id", "email", "search"], ignore_extra=True)
    assert names(plan.targets) == ["email"] and plan.skipped == ("id", "search")
    assert "id" not in plan.defaulted and "search" not in plan.defaulted


def test_identity_by_default_may_be_written() -> None:
    assert names(plan_load(CUSTOMERS, ["ref", "email"]).targets) == ["ref", "email"]


def test_two_fields_for_one_column() -> None:
    with pytest.raises(MappingError, match="'Email' and 'email' both feed column 'email'"):
        plan_load(CUSTOMERS, ["Email", "email"])


def test_no_field_feeds_anything() -> None:
    table = TargetTable("s", "t", (TableColumn("a", parse_type("text")),))
    with pytest.raises(MappingError, match="no field"):
        plan_load(table, ["b"], ignore_extra=True)


def test_copy_columns_are_quoted() -> None:
    table = TargetTable("s", 'we"ird', (TableColumn('a"b', parse_type("text")),
                                       TableColumn("Mixed Case", parse_type("text"))))
    plan = plan_load(table, ['a"b', "Mixed Case"])
    assert plan.copy_columns == '("a""b", "Mixed Case")'
    assert table.qualified == '"s"."we""ird"'
    with pytest.raises(MappingError):
        quote_ident("a\x00b")


def test_copy_rows_in_copy_order_with_rejects() -> None:
    plan = plan_load(CUSTOMERS, ["age", "spot", "email"])
    errors: dict[int, list[str]] = {}
    rows = plan.copy_rows([["30", "(1,2)", "a@x.org"],
                           ["x", "(0,0)", "b@x.org"],
                           ["", None, "tab\there"],
                           ["40000", "a\\b", None]], errors)
    assert rows[0] == "30\t(1,2)\ta@x.org"
    assert rows[2].split("\t")[1:] == ["\\N", "tab\\there"]
    assert rows[3].split("\t")[1] == "a\\\\b"  # a type the core does not judge: escaped as it is
    assert errors == {
        1: ["age: not a valid smallint: 'x'"],
        2: ["age: not a valid smallint: ''"],
        3: ["age: '40000' out of range for smallint", "email: required (NOT NULL)"],
    }
