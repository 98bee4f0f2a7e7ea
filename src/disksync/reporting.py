"""Reports of the analytic tools: PNG charts (matplotlib, Agg) and one self-contained HTML page.

Rules kept here:
* Headless: the Agg backend is selected before pyplot is imported; nothing opens a window.
* Every chart is written as a PNG file and inlined in the HTML page as base64, so the page
  is one file that can be mailed or archived without its directory.
* Text in the page is escaped; tables are plain HTML built from rows of strings.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
from matplotlib.figure import Figure


@dataclass(frozen=True, slots=True)
class Section:
    title: str
    text: str = ""
    table: tuple[Sequence[str], Sequence[Sequence[str]]] | None = None
    image: Path | None = None


def figure(
    rows: int, cols: int, *, width: float = 11, height_per_row: float = 2.6
) -> tuple[Figure, Any]:
    fig, axes = plt.subplots(rows, cols, figsize=(width, height_per_row * rows), squeeze=False)
    return fig, axes


def save(fig: Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _table_html(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def write_html(path: Path, title: str, sections: Sequence[Section]) -> Path:
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:system-ui,sans-serif;max-width:72rem;margin:2rem auto;"
        "padding:0 1rem;color:#222}table{border-collapse:collapse;margin:.5rem 0 1.5rem}"
        "td,th{border:1px solid #ccc;padding:.25rem .6rem;text-align:right}"
        "th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}"
        "img{max-width:100%}p{line-height:1.45}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    for section in sections:
        parts.append(f"<h2>{html.escape(section.title)}</h2>")
        if section.text:
            parts.extend(f"<p>{html.escape(p)}</p>" for p in section.text.split("\n\n"))
        if section.table is not None:
            parts.append(_table_html(*section.table))
        if section.image is not None:
            data = base64.b64encode(section.image.read_bytes()).decode()
            alt = html.escape(section.image.name)
            parts.append(f"<img alt='{alt}' src='data:image/png;base64,{data}'>")
    parts.append("</body></html>")
    path.write_text("".join(parts), encoding="utf-8")
    return path
