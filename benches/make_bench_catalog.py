"""Builds the beam-search benchmark's inputs from the Industrial_and_Scientific sample (D3 format):
a 10,000-title catalog of real-length titles (the 3,646 real titles plus variants of them: a word swapped with
another title's word, a pack size or a number changed) and 9,065 prompts (valid.csv then test.csv).
usage: python3 make_bench_catalog.py SHARED_DATA_DIR OUT_DIR [N_TITLES]"""
import csv, os, random, re, sys

src, out = sys.argv[1], sys.argv[2]
n_titles = int(sys.argv[3]) if len(sys.argv) > 3 else 10000
rng = random.Random(0)
lines = [l.rstrip("\n") for l in open(os.path.join(src, "info.txt"), encoding="utf-8")]
info = [l.rsplit("\t", 1) for l in lines]
titles = [t for t, _ in info]
seen = set(titles)
words = [w for t in titles for w in t.split() if w.isalpha() and len(w) > 3]
next_id = max(int(i) for _, i in info) + 1
extra = []
while len(seen) < n_titles:
    base = rng.choice(titles).split()
    op = rng.random()
    if op < 0.4:
        base[rng.randrange(len(base))] = rng.choice(words)
    elif op < 0.7:
        base.append(f"{rng.choice(['Pack of', 'Set of', 'Case of'])} {rng.randint(2, 500)}")
    else:
        t = " ".join(base)
        base = re.sub(r"\d+", lambda m: str(rng.randint(1, 999)), t).split() if re.search(r"\d", t) else base + [rng.choice(words)]
    t = " ".join(base)
    if t not in seen:
        seen.add(t)
        extra.append(f"{t}\t{next_id}")
        next_id += 1
os.makedirs(out, exist_ok=True)
with open(os.path.join(out, "info.txt"), "w", encoding="utf-8") as f:
    f.write("\n".join(lines + extra) + "\n")
with open(os.path.join(out, "prompts.csv"), "w", encoding="utf-8", newline="") as f:
    w = None
    for split in ("valid.csv", "test.csv"):
        r = csv.reader(open(os.path.join(src, split), newline="", encoding="utf-8"))
        header = next(r)
        if w is None:
            w = csv.writer(f)
            w.writerow(header)
        for row in r:
            w.writerow(row)
print(len(seen), "distinct titles,", sum(len(t) for t in seen) / len(seen), "mean chars")
