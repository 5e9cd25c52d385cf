"""The peer of `minirec eval --beam 20`: HF transformers' beam search (num_beams = 20, all 20 returned)
constrained to the catalog by a trie over the tokenised responses (prefix_allowed_tokens_fn; at a complete title
only EOS), one prompt at a time, the first N test samples. Prints prompts/s, HR@20 and peak RSS."""
import argparse
import time

import torch

from common import Data, load, peak_rss_gb

a = argparse.ArgumentParser()
a.add_argument("--model", required=True)
a.add_argument("--data", required=True)
a.add_argument("--prompts", type=int, default=4)
a.add_argument("--beam", type=int, default=20)
a.add_argument("--threads", type=int, default=2)
args = a.parse_args()

tok, model = load(args.model, args.threads)
model.eval()
data = Data(args.data)
eos = tok.convert_tokens_to_ids("<|endoftext|>")
trie, longest = {}, 0
seq_title = {}
for title in set(data.titles.values()):
    seq = tuple(tok(data.response(title), add_special_tokens=False)["input_ids"])
    longest = max(longest, len(seq))
    seq_title[seq] = title
    node = trie
    for t in seq:
        node = node.setdefault(t, {})
    node[None] = True


def allowed(start):
    def f(_batch, ids):
        node = trie
        for t in ids[start:].tolist():
            node = node.get(t)
            if node is None:
                return [eos]
        nxt = [t for t in node if t is not None]
        return nxt if nxt else [eos]
    return f


samples = data.split("test")[: args.prompts]
hits = 0
t0 = time.time()
with torch.no_grad():
    for s in samples:
        ids = tok(data.render(s), add_special_tokens=False, return_tensors="pt")["input_ids"]
        out = model.generate(ids, num_beams=args.beam, num_return_sequences=args.beam, do_sample=False,
                             max_new_tokens=longest + 1, prefix_allowed_tokens_fn=allowed(ids.shape[1]),
                             eos_token_id=eos, pad_token_id=eos, early_stopping=True)
        ranked = []
        for row in out[:, ids.shape[1]:].tolist():
            seq = tuple(t for t in row if t != eos)
            ranked.append(seq_title.get(seq))
        hits += data.titles[s["target"]] in ranked
wall = time.time() - t0
print(f"peer beam {args.beam}: {len(samples)} prompts in {wall:.1f} s, {len(samples) / wall:.4f} prompts/s, "
      f"HR@{args.beam} {hits / len(samples):.3f}, peak RSS {peak_rss_gb():.2f} GB")
