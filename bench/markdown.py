"""Print ``bench/results/latest.json`` as the Markdown table of the README."""

from __future__ import annotations

import json
from pathlib import Path

from bench.report import markdown_table

LATEST = Path(__file__).resolve().parent / "results" / "latest.json"


def main() -> None:
    """Print the table of the last ``python -m bench`` run."""
    document = json.loads(LATEST.read_text())
    print(markdown_table(document["results"]))


if __name__ == "__main__":
    main()
