"""Tables for a reader: rounded text cells and their Markdown and HTML pages.

The one owner of how a summary table's values are rounded (:func:`format_cells`),
shared by the Markdown copy (``{name}.md``) and the HTML page (``{name}.html``,
the copy ``snakemake --report`` shows). The CSV copy keeps every value unrounded.

Rounding by what a column holds (:func:`column_kind`, from its name; a table
can name the kind of the columns no rule knows, e.g. Table 4's variant columns
are F1 values):

- ``score`` (precision, recall, F1, recall@k, mAP, micro-AP): 3 decimals;
- ``distance`` (radii, distance statistics, margins): the decimals of the
  row's radius grid step, so two neighbouring radii stay apart
  (:func:`step_decimals`: step 1/64 → 3, step 0.25 → 2, step 0.001 → 3);
  4 significant digits where the step is not known;
- ``seconds``: 2 decimals under 10 s, 1 above; ``megabytes``: whole MB;
- ``integer`` (counts, sizes): as is; ``number``: 4 significant digits, a
  whole number as is (37026, not 3.703e+04); ``text``: as is.

A missing value is ``—``, followed by a footnote mark when the caller gives
the reason (``notes``); the footnotes are listed under the table, numbered in
order of first use.

The HTML page is self-contained (the report must work offline): a small inline
script sorts the rows when a column header is clicked, on the unrounded
values each cell carries in ``data-sort``; missing values sort last.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass

import pandas as pd

MISSING = "—"
SCORE_DECIMALS = 3
SIGNIFICANT = 4
MAX_DECIMALS = 6
SUPERSCRIPT = str.maketrans("0123456789", "⁰¹²³⁴⁵⁶⁷⁸⁹")

KINDS = ("score", "distance", "seconds", "megabytes", "integer", "number", "text")
SCORES = {"precision", "recall", "f1", "fbeta", "map_at_k", "micro_ap"}
INTEGERS = {"dimensions", "bytes_per_image", "queries", "jobs", "tp", "fp", "fn"}
DISTANCE_PREFIXES = ("similar_", "dissimilar_", "margin_")


def column_kind(column: str, default: str = "number") -> str:
    """What a column holds, from its name (:data:`KINDS`); ``default`` for a
    numeric column no rule names."""
    if column in SCORES or column.startswith("recall_at_"):
        return "score"
    if column in INTEGERS or column.endswith(("_count", "beyond_grid")):
        return "integer"
    if column == "radius" or column.startswith(DISTANCE_PREFIXES):
        return "distance"
    if column == "seconds" or column.endswith("_seconds"):
        return "seconds"
    if column.endswith("_mb"):
        return "megabytes"
    return default


def step_decimals(step: float | None) -> int | None:
    """Decimals of a radius on a grid of ``step``: those of the step written with
    2 significant digits (1/64 → 0.016: 3; 0.25: 2; 0.001: 3; 5: 0), so
    neighbouring radii stay apart and a grid like 0.25, 0.5, ... shows exactly;
    at most :data:`MAX_DECIMALS`; None when the step is not known."""
    if step is None or not math.isfinite(step) or step <= 0:
        return None
    written = f"{float(f'{step:.2g}'):.{MAX_DECIMALS}f}".rstrip("0")
    decimals = len(written.partition(".")[2])
    return decimals if written.strip("0.") else MAX_DECIMALS  # a step below 10^-6


def _missing(value) -> bool:
    """None, NaN or NA (an empty text is a value: Table 3's ``same_ranking_as``)."""
    return value is None or (not isinstance(value, str) and bool(pd.isna(value)))


def format_value(value, kind: str, decimals: int | None = None) -> str:
    """One value as text; ``decimals`` is the row's for a ``distance`` value.
    A missing value (None, NaN, NA) is an empty string (the caller marks it)."""
    if _missing(value):
        return ""
    if kind == "text" or isinstance(value, str | bool):
        return str(value)
    value = float(value)
    if kind == "score":
        return f"{value:.{SCORE_DECIMALS}f}"
    if kind == "distance" and decimals is not None:
        return f"{value:.{decimals}f}"
    if kind == "seconds":
        return f"{value:.2f}" if abs(value) < 10 else f"{value:.1f}"
    if kind == "megabytes":
        return f"{value:.0f}"
    if value.is_integer() and abs(value) < 1e15:  # a count, whatever its column
        return str(int(value))
    return f"{value:.{SIGNIFICANT}g}"


@dataclass
class Cells:
    """A table as a reader sees it: ``text`` (rounded, missing values marked),
    ``sort`` (the unrounded value of each cell as text, "" when missing),
    ``numeric`` (per column: right-aligned) and ``footnotes`` (numbered from 1)."""

    text: pd.DataFrame
    sort: pd.DataFrame
    numeric: list[bool]
    footnotes: list[str]


def format_cells(
    table: pd.DataFrame,
    *,
    default: str = "number",
    steps: pd.Series | None = None,
    notes: pd.DataFrame | None = None,
) -> Cells:
    """The rounded cells of ``table``: ``default`` is the kind of a numeric column
    no rule names, ``steps`` the radius grid step of each row (for ``distance``
    columns), ``notes`` the reason of a missing value (same index and columns,
    a text or None)."""
    decimals = [None] * len(table)
    if steps is not None:
        decimals = [step_decimals(step) for step in steps]
    text, sort, numeric = {}, {}, []
    for column in table.columns:
        values = table[column]
        is_numeric = pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(
            values
        )
        kind = column_kind(str(column), default) if is_numeric else "text"
        numeric.append(is_numeric)
        text[column] = [format_value(v, kind, decimals[i]) for i, v in enumerate(values)]
        sort[column] = ["" if _missing(v) else str(v) for v in values]
    text = pd.DataFrame(text, columns=table.columns)
    # Missing values marked in reading order, so the footnotes are numbered as read.
    footnotes: list[str] = []
    for position in range(len(table)):
        for k, column in enumerate(table.columns):
            if _missing(table[column].iloc[position]):
                note = None if notes is None else notes[column].iloc[position]
                text.iat[position, k] = MISSING + _mark(note, footnotes)
    return Cells(text, pd.DataFrame(sort, columns=table.columns), numeric, footnotes)


def _mark(note: str | None, footnotes: list[str]) -> str:
    """The superscript number of ``note`` (added to ``footnotes`` on first use)."""
    if not note:
        return ""
    if note not in footnotes:
        footnotes.append(note)
    return str(footnotes.index(note) + 1).translate(SUPERSCRIPT)


def footnote_lines(cells: Cells) -> list[str]:
    return [f"{str(i).translate(SUPERSCRIPT)} {note}" for i, note in enumerate(cells.footnotes, 1)]


def markdown(cells: Cells) -> str:
    """A Markdown table of the cells (numbers right-aligned), its footnotes below."""
    rows = [[str(c) for c in cells.text.columns], *cells.text.values.tolist()]
    widths = [max(3, *(len(row[i]) for row in rows)) for i in range(len(rows[0]))]

    def line(cells_of_row) -> str:
        return "| " + " | ".join(cells_of_row) + " |"

    aligned = [
        [
            c.rjust(w) if n else c.ljust(w)
            for c, w, n in zip(row, widths, cells.numeric, strict=True)
        ]
        for row in rows
    ]
    rule = [
        "-" * (w - 1) + ":" if n else ":" + "-" * (w - 1)
        for w, n in zip(widths, cells.numeric, strict=True)
    ]
    lines = [line(aligned[0]), line(rule), *(line(row) for row in aligned[1:])]
    notes = footnote_lines(cells)
    return "\n".join(lines + ([""] + notes if notes else [])) + "\n"


STYLE = """
body { font-family: system-ui, sans-serif; font-size: 13px; margin: 8px; }
table { border-collapse: collapse; }
th, td { padding: 2px 8px; border-bottom: 1px solid #ddd; white-space: nowrap; }
th { cursor: pointer; background: #f4f4f4; position: sticky; top: 0; user-select: none; }
th[aria-sort="ascending"]::after { content: " ▲"; }
th[aria-sort="descending"]::after { content: " ▼"; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tbody tr:hover { background: #eef4ff; }
p.hint, ol.notes { color: #555; }
"""

# Sorts the rows of a table when a header is clicked (again: the other way), on
# each cell's data-sort: numbers as numbers, other text by locale; missing
# values (an empty data-sort) last in both directions.
SORT_SCRIPT = """
function compareKeys(a, b, ascending) {
  if (a === "" || b === "") return (a === "") - (b === "");
  const x = Number(a), y = Number(b);
  const order = !isNaN(x) && !isNaN(y) ? x - y : a.localeCompare(b);
  return ascending ? order : -order;
}
function sortTable(table, column, ascending) {
  const body = table.tBodies[0];
  const key = (row) => row.cells[column].dataset.sort;
  const rows = Array.from(body.rows);
  rows.sort((r, s) => compareKeys(key(r), key(s), ascending));
  rows.forEach((row) => body.appendChild(row));
}
document.querySelectorAll("table.sortable").forEach((table) => {
  table.querySelectorAll("th").forEach((th, column) => {
    th.addEventListener("click", () => {
      const ascending = th.getAttribute("aria-sort") !== "ascending";
      table.querySelectorAll("th").forEach((h) => h.removeAttribute("aria-sort"));
      th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
      sortTable(table, column, ascending);
    });
  });
});
"""


def page(cells: Cells, title: str) -> str:
    """A self-contained HTML page of the table: rounded cells, sortable by any
    column (inline script, nothing fetched), footnotes below."""
    head = "".join(
        f'<th scope="col" title="sort by {html.escape(str(c))}">{html.escape(str(c))}</th>'
        for c in cells.text.columns
    )
    body = []
    for shown, keys in zip(cells.text.values, cells.sort.values, strict=True):
        tds = "".join(
            f'<td{" class=num" if n else ""} data-sort="{html.escape(k)}">{html.escape(t)}</td>'
            for t, k, n in zip(shown, keys, cells.numeric, strict=True)
        )
        body.append(f"<tr>{tds}</tr>")
    notes = "".join(f"<li>{html.escape(note)}</li>" for note in cells.footnotes)
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>\n"
        f'<p class="hint">{len(body)} rows; click a column header to sort.</p>\n'
        f'<table class="sortable"><thead><tr>{head}</tr></thead>\n<tbody>\n'
        + "\n".join(body)
        + "\n</tbody></table>\n"
        + (f'<ol class="notes">{notes}</ol>\n' if notes else "")
        + f"<script>{SORT_SCRIPT}</script>\n</body></html>\n"
    )
