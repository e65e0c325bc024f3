"""Texts for `lidscope bench --embed-texts` and a real corpus for `bench --real`: Debian's fortunes.

    apt-get install fortunes
    python3 tools/bench/fortunes_texts.py fortunes.parquet [--count 1460] [--seed 3]

Every fortune of every topic file in /usr/share/games/fortunes (one per '%' line), shuffled with
the seed, the first --count of them: columns seq_id (int64), topic, text. Needs pyarrow.
"""
import argparse
import pathlib
import random

import pyarrow as pa
import pyarrow.parquet as pq

ap = argparse.ArgumentParser()
ap.add_argument("out")
ap.add_argument("--count", type=int, default=1460)
ap.add_argument("--seed", type=int, default=3)
ap.add_argument("--dir", default="/usr/share/games/fortunes")
a = ap.parse_args()

rows = []
for f in sorted(pathlib.Path(a.dir).iterdir()):
    if f.suffix or not f.is_file():
        continue
    text = f.read_text(encoding="utf-8", errors="replace")
    rows += [(f.name, t.strip()) for t in text.split("\n%\n") if t.strip()]
random.Random(a.seed).shuffle(rows)
rows = rows[: a.count]
pq.write_table(
    pa.table({"seq_id": pa.array(range(len(rows)), pa.int64()), "topic": [r[0] for r in rows], "text": [r[1] for r in rows]}),
    a.out,
)
print(f"{a.out}: {len(rows)} fortunes")
