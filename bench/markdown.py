"""Print ``bench/results/latest.json`` (or a results file given) as the README's table."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from bench.report import markdown_table

LATEST = Path(__file__).resolve().parent / "results" / "latest.json"


def main(argv: list[str] | None = None) -> None:
    """Print the table of the last ``python -m bench`` run (or of the file given)."""
    args = sys.argv[1:] if argv is None else argv
    document = json.loads((Path(args[0]) if args else LATEST).read_text())
    print(markdown_table(document["results"]))


if __name__ == "__main__":
    main()
