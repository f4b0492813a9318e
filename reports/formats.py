"""Render a :class:`reports.tables.Table` as Markdown, CSV, LaTeX (booktabs), HTML, and the frame the MLflow
UI shows (``mlflow.log_table``)."""

from __future__ import annotations

import html
from pathlib import Path

import pandas as pd

from reports.tables import BEST, MISSING, NO, SECOND, YES, Table

FORMATS = ("md", "csv", "tex", "html")


def _marked(table: Table, wrap: dict[int, tuple[str, str]], escape=lambda s: s) -> list[list[str]]:
    """Display rows escaped for the target format, best/second cells wrapped in its markup."""
    out = []
    for i, row in enumerate(table.rows):
        cells = []
        for j, text in enumerate(row):
            before, after = wrap.get(table.ranks.get((i, j), 0), ("", ""))
            cells.append(f"{before}{escape(text)}{after}")
        out.append(cells)
    return out


def to_markdown(table: Table) -> str:
    def cell(text: str) -> str:
        return text.replace("|", r"\|")

    # Markdown has no underline and MLflow's viewer shows <u> raw: second best is italic here
    rows = _marked(table, {BEST: ("**", "**"), SECOND: ("_", "_")}, cell)
    lines = [f"### {table.title}", "", "| " + " | ".join(map(cell, table.header)) + " |",
             "|" + "|".join("---" for _ in table.header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join([*lines, "", *[f"_{note}_" for note in table.notes]]) + "\n"


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
_LATEX_SYMBOLS = {"±": r"$\pm$", YES: r"\checkmark", NO: "--", MISSING: "---"}


def latex_escape(text: str) -> str:
    escaped = "".join(_LATEX_SPECIAL.get(ch, ch) for ch in text)
    for symbol, command in _LATEX_SYMBOLS.items():
        escaped = escaped.replace(symbol, command)
    return escaped


def to_latex(table: Table) -> str:
    """A booktabs ``tabular`` (needs ``booktabs`` and, for ✓, ``amssymb``); title and notes as comments."""
    rows = _marked(table, {BEST: (r"\textbf{", "}"), SECOND: (r"\underline{", "}")}, latex_escape)
    spec = "l" + "c" * (len(table.header) - 1)
    lines = [f"% {table.title}", *[f"% {note}" for note in table.notes], rf"\begin{{tabular}}{{{spec}}}", r"\toprule",
             " & ".join(latex_escape(h) for h in table.header) + r" \\", r"\midrule"]
    lines += [" & ".join(row) + r" \\" for row in rows]
    return "\n".join([*lines, r"\bottomrule", r"\end{tabular}"]) + "\n"


def to_html(table: Table) -> str:
    """A standalone, well-formed (XHTML-compatible) page: the artifact viewer of the MLflow UI renders it."""
    rows = _marked(table, {BEST: ("<strong>", "</strong>"), SECOND: ("<u>", "</u>")}, html.escape)
    head = "".join(f"<th>{html.escape(h)}</th>" for h in table.header)
    body = "\n".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    notes = "\n".join(f"<p>{html.escape(note)}</p>" for note in table.notes)
    style = ("table{border-collapse:collapse;font-family:sans-serif;font-size:13px}"
             "th,td{padding:3px 8px;text-align:center;border-bottom:1px solid #ddd}"
             "th{border-bottom:2px solid #333}td:first-child{text-align:left}p{font-family:sans-serif;font-size:12px}")
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"/><title>{html.escape(table.title)}</title>'
            f"<style>{style}</style></head>\n<body>\n<table>\n<caption>{html.escape(table.title)}</caption>\n"
            f"<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody>\n</table>\n{notes}\n</body></html>\n")


def to_csv(table: Table) -> str:
    """The numbers behind the table (missing as empty fields, never 0), for reading back with pandas."""
    return table.data.to_csv(index=False)


def ui_frame(table: Table) -> pd.DataFrame:
    """Display text for the MLflow UI's table view, where markup would show raw: marks spelled out."""
    suffix = {BEST: " (best)", SECOND: " (2nd)"}
    rows = [[text + suffix.get(table.ranks.get((i, j), 0), "") for j, text in enumerate(row)]
            for i, row in enumerate(table.rows)]
    return pd.DataFrame(rows, columns=table.header)


_RENDER = {"md": to_markdown, "csv": to_csv, "tex": to_latex, "html": to_html}


def write_all(table: Table, out_dir: Path) -> list[Path]:
    """Every format of ``table`` into ``out_dir`` as ``<name>.<ext>``; overwrites, so rebuilding is idempotent."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for ext in FORMATS:
        path = out_dir / f"{table.name}.{ext}"
        path.write_text(_RENDER[ext](table), encoding="utf-8")
        paths.append(path)
    return paths
