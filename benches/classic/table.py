"""One table of classic-baseline runs: mean ± std over seeds of title- and item-level NDCG@10 and HR@10.
   python3 benches/classic/table.py OUT [OUT ...]   (each OUT holds runs with test.json, as ours.sh or
   recbole_peer.py write; with several, rows are named OUT's folder name / run and the same runs sit together)
"""
import json
import pathlib
import sys


def cell(seeds, key, item):
    vals = [(v["item_level"] if item else v)[key] for k, v in seeds.items() if k != "std"]
    m = sum(vals) / len(vals)
    sd = (sum((x - m) ** 2 for x in vals) / (len(vals) - 1)) ** 0.5 if len(vals) > 1 else 0.0
    return f"{m:.4f} ± {sd:.4f}", len(vals)


def main(outs):
    rows = []
    paths = [(p.parent.name, o, p) for o in outs for p in pathlib.Path(o).glob("*/test.json")]
    for run, out, p in sorted(paths):
        j = json.loads(p.read_text())
        seeds = j["seeds"]
        t10, n = cell(seeds, "ndcg@10", False)
        h10, _ = cell(seeds, "hr@10", False)
        i10, _ = cell(seeds, "ndcg@10", True)
        ih10, _ = cell(seeds, "hr@10", True)
        name = f"{pathlib.Path(out).name} / {run}" if len(outs) > 1 else run
        rows.append((name, n, t10, h10, i10, ih10))
    print("| run | seeds | NDCG@10 (title) | HR@10 (title) | NDCG@10 (item) | HR@10 (item) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print("| " + " | ".join(str(x) for x in r) + " |")


if __name__ == "__main__":
    main(sys.argv[1:])
