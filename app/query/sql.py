"""Compile a `Query` into SQL text and bind parameters for SQLite or PostgreSQL.

Identifiers come only from the column whitelist (`columns.py`) and JSON paths are formatted
from integer tags, so no caller text ever reaches the SQL: every value is a bind parameter.

Person names are folded here and only here: indexed PN columns hold `columns.normalize`
(casefold) output, so query values go through the same function; PN values read from JSON
are compared with SQL `lower()` on both sides. Attributes without a column are read from
the stored DICOM JSON of their level; only the first value (and the first item of each
sequence) is matched there.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from app.dicom.levels import Level, level_of
from app.query.columns import Kind, column_for, normalize
from app.query.model import Condition, Match, Query

__all__ = [
    "POSTGRES",
    "SQLITE",
    "Compiled",
    "Dialect",
    "compile_counted_search",
    "compile_search",
    "install_sqlite_functions",
]


@dataclass(frozen=True)
class Compiled:
    sql: str
    params: tuple[object, ...]


class Dialect:
    """How one database spells placeholders, JSON access and pattern matching."""

    name = ""

    def placeholder(self, index: int) -> str:
        """The placeholder of the `index`-th (1-based) parameter."""
        raise NotImplementedError

    def json_text(self, column: str, path: Sequence[int], *, pn: bool) -> str:
        """The first value at `path` as text (a PN's Alphabetic group)."""
        raise NotImplementedError

    def json_number(self, column: str, path: Sequence[int]) -> str:
        """The first value at `path`, comparable with `number_param`."""
        raise NotImplementedError

    def number_param(self, placeholder: str) -> str:
        """A decimal string parameter as a number comparable with `json_number`."""
        raise NotImplementedError

    def pattern_match(self, expr: str, placeholder: str) -> str:
        """Case-sensitive match of `expr` against a pattern made by `pattern`."""
        raise NotImplementedError

    def pattern(self, value: str) -> str:
        """A DICOM wildcard value ('*', '?') as this dialect's pattern."""
        raise NotImplementedError

    def position(self, expr: str, placeholder: str) -> str:
        """1-based position of a substring in `expr`, 0 when absent."""
        raise NotImplementedError

    def regex_match(self, expr: str, placeholder: str) -> str:
        """Case-sensitive search of `expr` for a regular expression made by `_member_regex`."""
        raise NotImplementedError

    def ordered(self, expr: str) -> str:
        """`expr` compared in code-point order (date and time strings in JSON)."""
        return expr

    def json_contains(
        self, column: str, path: Sequence[int], operand: str, *, number: bool
    ) -> str | None:
        """A test that a JSON index can serve and that holds whenever the first value at
        `path` equals `operand` (as `json_text`, or `json_number` if `number`, compare it);
        None if this dialect has no such index."""
        return None


class _SQLite(Dialect):
    name = "sqlite"

    def placeholder(self, index: int) -> str:
        return "?"

    def json_text(self, column: str, path: Sequence[int], *, pn: bool) -> str:
        steps = "".join(f'."{tag:08X}".Value[0]' for tag in path)
        return f"json_extract({column}, '${steps}{'.Alphabetic' if pn else ''}')"

    def json_number(self, column: str, path: Sequence[int]) -> str:
        return self.json_text(column, path, pn=False)  # JSON numbers come back as numbers

    def number_param(self, placeholder: str) -> str:
        return f"CAST({placeholder} AS REAL)"

    def pattern_match(self, expr: str, placeholder: str) -> str:
        return f"{expr} GLOB {placeholder}"

    def pattern(self, value: str) -> str:
        # GLOB shares '*' and '?' with DICOM; '[' opens a class, so it is matched as "[[]".
        return value.replace("[", "[[]")

    def position(self, expr: str, placeholder: str) -> str:
        return f"instr({expr}, {placeholder})"

    def regex_match(self, expr: str, placeholder: str) -> str:
        # SQLite has no regular expressions of its own: REGEXP calls the regexp() function
        # that install_sqlite_functions registers on every connection.
        return f"{expr} REGEXP {placeholder}"


class _Postgres(Dialect):
    name = "postgres"

    def placeholder(self, index: int) -> str:
        return f"${index}"

    def json_text(self, column: str, path: Sequence[int], *, pn: bool) -> str:
        return f"({column}::jsonb #>> '{self._path(path, pn)}')"

    def json_number(self, column: str, path: Sequence[int]) -> str:
        return f"({column}::jsonb #> '{self._path(path, False)}')"

    def number_param(self, placeholder: str) -> str:
        # jsonb numbers compare numerically, so 1.50 equals 1.5.
        return f"to_jsonb(CAST({placeholder} AS text)::numeric)"

    def pattern_match(self, expr: str, placeholder: str) -> str:
        return f"{expr} LIKE {placeholder} ESCAPE '\\'"

    def pattern(self, value: str) -> str:
        escaped = value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        return escaped.replace("*", "%").replace("?", "_")

    def position(self, expr: str, placeholder: str) -> str:
        return f"strpos({expr}, {placeholder})"

    def regex_match(self, expr: str, placeholder: str) -> str:
        return f"{expr} ~ {placeholder}"

    def ordered(self, expr: str) -> str:
        return f'{expr} COLLATE "C"'

    def json_contains(
        self, column: str, path: Sequence[int], operand: str, *, number: bool
    ) -> str | None:
        # jsonb containment (@>) is what a GIN jsonb_path_ops index serves. It matches any
        # value, not only the first, so it narrows the rows and the path test decides.
        doc = operand if number else f"to_jsonb(CAST({operand} AS text))"
        for tag in reversed(path):
            doc = (
                f"jsonb_build_object('{tag:08X}',"
                f" jsonb_build_object('Value', jsonb_build_array({doc})))"
            )
        return f"{column} @> {doc}"

    @staticmethod
    def _path(path: Sequence[int], pn: bool) -> str:
        steps = ",".join(f"{tag:08X},Value,0" for tag in path)
        return "{" + steps + (",Alphabetic" if pn else "") + "}"


SQLITE: Dialect = _SQLite()
POSTGRES: Dialect = _Postgres()


_SELECT: dict[Level, str] = {
    Level.PATIENT: "patient.attrs AS patient_attrs, patient.num_studies AS num_studies",
    Level.STUDY: (
        "study.attrs AS study_attrs, study.modalities_in_study AS modalities_in_study,"
        " study.num_series AS num_series, study.pk AS study_pk,"
        " study.num_instances AS study_folded, study.counted_pk AS study_counted_pk"
    ),
}
_SELECT[Level.SERIES] = (
    f"{_SELECT[Level.STUDY]}, series.attrs AS series_attrs, series.pk AS series_pk,"
    " series.num_instances AS series_folded, series.counted_pk AS series_counted_pk"
)
_SELECT[Level.INSTANCE] = (
    f"{_SELECT[Level.SERIES]}, instance.metadata AS instance_attrs, instance.pk AS instance_pk"
)

_FROM: dict[Level, str] = {
    Level.PATIENT: "patient",
    Level.STUDY: "study",
    Level.SERIES: "series JOIN study ON study.pk = series.study_fk",
    Level.INSTANCE: (
        "instance JOIN series ON series.pk = instance.series_fk"
        " JOIN study ON study.pk = instance.study_fk"
    ),
}

_TABLES: dict[Level, frozenset[str]] = {
    Level.PATIENT: frozenset({"patient"}),
    Level.STUDY: frozenset({"study"}),
    Level.SERIES: frozenset({"series", "study"}),
    Level.INSTANCE: frozenset({"instance", "series", "study"}),
}

_LEVEL_TABLE = {
    Level.PATIENT: "patient",
    Level.STUDY: "study",
    Level.SERIES: "series",
    Level.INSTANCE: "instance",
}
_JSON_COLUMN = {
    "patient": "patient.attrs",
    "study": "study.attrs",
    "series": "series.attrs",
    "instance": "instance.metadata",
}
# JSON columns with a containment index (PostgreSQL GIN): not the instance's, which is
# large, written most, and searched only within a study or series.
_JSON_INDEXED = frozenset({"patient.attrs", "study.attrs", "series.attrs"})
_NUMERIC_VRS = frozenset({"IS", "DS", "US", "UL", "SS", "SL", "SV", "UV", "FL", "FD"})


def compile_search(tenant: str, query: Query, dialect: Dialect) -> Compiled:
    """SELECT of the rows of `query.level` in `tenant` that meet every condition, one page
    of them.

    Every joined table is filtered by tenant, not only the level's (a child always has its
    parent's): whichever table the planner starts from, an index leading with tenant
    serves it.
    """
    b = _Builder(dialect)
    joined = sorted(_TABLES[query.level])
    where = [f"{name}.tenant = {b.bind(tenant)}" for name in joined]
    where += [f"({_condition(b, c, query.level)})" for c in query.conditions]
    table = _LEVEL_TABLE[query.level]
    sql = f"SELECT {_SELECT[query.level]} FROM {_FROM[query.level]}"
    sql += " WHERE " + " AND ".join(where)
    sql += f" ORDER BY {table}.pk LIMIT {b.bind(query.limit)} OFFSET {b.bind(query.offset)}"
    return Compiled(sql, tuple(b.params))


# Instance counts are not updated once per instance stored (each update would leave a
# dead study and series row version behind on PostgreSQL): a parent's num_instances counts
# its instances up to its counted_pk, writers fold in the newer ones once there are enough
# (app/index/rows.py, FOLD_AT), and `compile_counted_search` adds those not folded yet,
# once per distinct parent of a page, on a range of the instance (fk, pk) indexes.
# parent: instance's foreign key, the alias of the count
_COUNTED = {"study": ("study_fk", "num_instances"), "series": ("series_fk", "series_num_instances")}
_COUNTED_AT = {
    Level.STUDY: ("study",),
    Level.SERIES: ("study", "series"),
    Level.INSTANCE: ("study", "series"),
}


def compile_counted_search(tenant: str, query: Query, dialect: Dialect) -> Compiled:
    """`compile_search`, its hits with the number of instances of their study (alias
    num_instances) and series (series_num_instances), in one statement."""
    page = compile_search(tenant, query, dialect)
    parents = _COUNTED_AT.get(query.level, ())
    if not parents:
        return page
    columns, joins = ["hit.*"], []
    for parent in parents:
        fk, alias = _COUNTED[parent]
        pk, counted, newer = f"{parent}_pk", f"{parent}_counted_pk", f"{parent}_newer"
        columns.append(f"hit.{parent}_folded + coalesce({newer}.n, 0) AS {alias}")
        joins.append(
            f" LEFT JOIN (SELECT instance.{fk}, count(*) AS n"
            f" FROM (SELECT DISTINCT {pk}, {counted} FROM hit) AS parent"
            f" JOIN instance ON instance.{fk} = parent.{pk} AND instance.pk > parent.{counted}"
            f" GROUP BY instance.{fk}) AS {newer} ON {newer}.{fk} = hit.{pk}"
        )
    order = f"hit.{_LEVEL_TABLE[query.level]}_pk"
    sql = f"WITH hit AS ({page.sql}) SELECT {', '.join(columns)} FROM hit{''.join(joins)}"
    return Compiled(f"{sql} ORDER BY {order}", page.params)


class _Builder:
    """Collects bind parameters in the order their placeholders appear."""

    def __init__(self, dialect: Dialect) -> None:
        self.dialect = dialect
        self.params: list[object] = []

    def bind(self, value: object) -> str:
        self.params.append(value)
        return self.dialect.placeholder(len(self.params))


def _same(value: str) -> str:
    return value


def _fold(value: str) -> str:
    folded = normalize(Kind.PN, value)
    return folded if isinstance(folded, str) else value


@dataclass(frozen=True)
class _Target:
    """What a condition compares: an SQL expression and how values are bound against it."""

    expr: str
    value: Callable[[str], object] = _same  # query value -> bound parameter
    param: Callable[[str], str] = _same  # placeholder -> SQL operand
    lower: Callable[[str], str] = _same  # range lower bound -> bound parameter
    multi: bool = False  # a "\CT\MR\" list: values match as members
    # operand -> an index-friendly test implied by equality (JSON containment), if any
    contains: Callable[[str], str | None] | None = None


def _condition(b: _Builder, condition: Condition, level: Level) -> str:
    return _compare(b, _target(b.dialect, condition, level), condition)


def _target(dialect: Dialect, condition: Condition, level: Level) -> _Target:
    column = column_for(condition.path, level)
    if column is None:
        return _json_target(dialect, condition, level)
    _require_joined(column.table, level)
    expr = f"{column.table}.{column.name}"
    if column.kind is Kind.PN:
        return _Target(expr, value=_fold)
    if column.kind is Kind.INT:
        return _Target(expr, value=int)
    return _Target(expr, multi=column.kind is Kind.MULTI)


def _json_target(dialect: Dialect, condition: Condition, level: Level) -> _Target:
    attr_level = level_of(condition.path[0])
    if attr_level is Level.PATIENT and level is not Level.PATIENT:
        attr_level = Level.STUDY  # patient attributes are copied into the study row
    table = _LEVEL_TABLE[attr_level]
    _require_joined(table, level)
    column, path, vr = _JSON_COLUMN[table], condition.path, condition.vr
    number = vr in _NUMERIC_VRS

    def contains(operand: str) -> str | None:
        return dialect.json_contains(column, path, operand, number=number)

    hint = contains if column in _JSON_INDEXED else None
    if number:
        expr = dialect.json_number(column, path)
        return _Target(expr, param=dialect.number_param, contains=hint)
    if vr == "PN":
        text = dialect.json_text(column, path, pn=True)
        return _Target(f"lower({text})", param=lambda p: f"lower({p})")
    text = dialect.json_text(column, path, pn=False)
    if vr in ("TM", "DT"):
        # Stored values keep their own precision ("1030"), and a shorter string sorts
        # before the padded bound "103000.000000": drop the padding of lower bounds.
        return _Target(dialect.ordered(text), lower=lambda v: v.rstrip("0."))
    if vr == "DA":
        return _Target(dialect.ordered(text), contains=hint)
    return _Target(text, contains=hint)


def _require_joined(table: str, level: Level) -> None:
    if table not in _TABLES[level]:
        raise ValueError(f"{table} attributes cannot be matched in a {level.name} query")


def _compare(b: _Builder, t: _Target, c: Condition) -> str:
    if c.match in (Match.SINGLE, Match.UID_LIST):
        return _members(b, t, c.values) if t.multi else _equals(b, t, c.values)
    if c.match is Match.WILDCARD:
        if t.multi:
            return _member_wildcard(b, t, c.values[0])
        return _wildcard(b, t, c.values[0])
    if c.match is Match.RANGE:
        return _range(b, t, c.values[0], c.values[1])
    return _fuzzy(b, t, c.values[0])


def _bind(b: _Builder, t: _Target, value: object) -> str:
    return t.param(b.bind(value))


def _equals(b: _Builder, t: _Target, values: Sequence[str]) -> str:
    operands = [_bind(b, t, t.value(v)) for v in values]
    if len(operands) > 1:
        return f"{t.expr} IN ({', '.join(operands)})"
    equal = f"{t.expr} = {operands[0]}"
    hint = t.contains(operands[0]) if t.contains else None
    return f"{equal} AND {hint}" if hint else equal


def _members(b: _Builder, t: _Target, values: Sequence[str]) -> str:
    """Any of `values` is one of the backslash-delimited members of a MULTI column."""
    parts = []
    for value in values:
        member = _bind(b, t, "\\" + value + "\\")
        parts.append(f"{b.dialect.position(t.expr, member)} > 0")
    return " OR ".join(parts)


def _member_regex(value: str) -> str:
    """A DICOM wildcard value as a regular expression matching one member of a "\\CT\\MR\\"
    list: '*' and '?' never cross the delimiter, so "C*R" does not match CT and MR together
    (PS3.4 C.2.2.2.4, applied to each value of a multi-valued attribute). The syntax is
    common to Python's re and PostgreSQL's advanced regular expressions: re.escape puts a
    backslash only before non-alphanumeric characters, which both read as the literal."""
    body = "".join(
        "[^\\\\]*" if ch == "*" else "[^\\\\]" if ch == "?" else re.escape(ch) for ch in value
    )
    return f"\\\\{body}\\\\"


def _member_wildcard(b: _Builder, t: _Target, value: str) -> str:
    return b.dialect.regex_match(t.expr, _bind(b, t, _member_regex(value)))


def _regexp(pattern: str, value: object) -> bool:
    # re caches compiled patterns; a NULL column (no series yet) matches nothing.
    return isinstance(value, str) and re.search(pattern, value) is not None


def install_sqlite_functions(db: sqlite3.Connection) -> None:
    """Register the functions compiled SQLite queries call (REGEXP) on a connection."""
    db.create_function("regexp", 2, _regexp, deterministic=True)


def _wildcard(b: _Builder, t: _Target, value: str) -> str:
    pattern = b.dialect.pattern(str(t.value(value)))
    return b.dialect.pattern_match(t.expr, _bind(b, t, pattern))


def _range(b: _Builder, t: _Target, lower: str, upper: str) -> str:
    parts = []
    if lower:
        parts.append(f"{t.expr} >= {_bind(b, t, t.lower(lower))}")
    if upper:
        parts.append(f"{t.expr} <= {_bind(b, t, upper)}")
    return " AND ".join(parts) or "1 = 1"


def _fuzzy(b: _Builder, t: _Target, value: str) -> str:
    """Some name component starts with `value`: the name itself, or after '^' or ' '."""
    folded = str(t.value(value))
    position = b.dialect.position
    starts = f"{position(t.expr, _bind(b, t, folded))} = 1"
    inside = [f"{position(t.expr, _bind(b, t, sep + folded))} > 0" for sep in "^ "]
    return " OR ".join([starts, *inside])
