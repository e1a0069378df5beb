"""The one way ``inferflux`` and ``inferctl`` print a table.

On a terminal: a boxed rich table, whose cells wrap (long words fold) instead of being cut.
To a pipe or a file: plain tab-separated lines, a header line first, every cell whole, so
``inferflux plugins | grep NAME`` and ``cut -f1`` work whatever the terminal width. A cell's
line breaks become ``"; "`` there, so each row stays one line.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TextIO

from rich.console import Console
from rich.table import Table
from rich.text import Text

#: A cell: plain text, or rich ``Text`` (its style shows on a terminal only).
Cell = str | Text


def print_table(
    columns: Sequence[str], rows: Sequence[Sequence[Cell]], *, file: TextIO | None = None
) -> None:
    """Print ``rows`` under ``columns``: boxed on a terminal, tab-separated elsewhere."""
    out = file if file is not None else sys.stdout
    console = Console(file=out)
    if console.is_terminal:
        table = Table(*columns)
        for column in table.columns:
            column.overflow = "fold"
        for row in rows:
            # Plain strings are text, never rich markup: a "[...]" in a cell stays as it is.
            table.add_row(*(cell if isinstance(cell, Text) else Text(cell) for cell in row))
        console.print(table)
        return
    for line in [list(columns), *rows]:
        out.write("\t".join(plain_cell(cell) for cell in line) + "\n")
    out.flush()


def plain_cell(cell: Cell) -> str:
    """A cell as one line of plain text (no markup, no tabs, no line breaks)."""
    text = cell.plain if isinstance(cell, Text) else cell
    return "; ".join(part for part in text.replace("\t", " ").splitlines() if part)
