"""Shared output of the benchmark scripts: a JSON payload and a Markdown table."""

import json
from pathlib import Path


def write_report(out: Path, stem: str, payload: dict, table: str) -> None:
    """Write ``out/stem.json`` and ``out/stem.md`` and print the table."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(payload, indent=2, default=float))
    (out / f"{stem}.md").write_text(table)
    print()
    print(table)
    print(f"wrote {out / (stem + '.json')} and {out / (stem + '.md')}")
