"""The peer of `minirec sft --max-train N --batch-size B [--lora-rank R]`: the first N training samples in
batches of B, loss on the response tokens only, AdamW; full fine-tuning or peft LoRA on the seven projections.
With --bf16-autocast, the forward and backward passes run under torch.autocast("cpu", bfloat16) (mixed precision:
products in bf16, weights and optimiser f32), the peer of `minirec sft --bf16-mixed`.
Prints the training loop's wall time, samples/s, tokens/s (prompt and response tokens, no padding) and peak RSS."""
import argparse
import time

import torch

from common import Data, load, peak_rss_gb

a = argparse.ArgumentParser()
a.add_argument("--model", required=True)
a.add_argument("--data", required=True)
a.add_argument("--samples", type=int, default=32)
a.add_argument("--batch", type=int, default=8)
a.add_argument("--lora-rank", type=int, default=0)
a.add_argument("--lr", type=float, default=3e-4)
a.add_argument("--threads", type=int, default=2)
a.add_argument("--bf16-autocast", action="store_true")
args = a.parse_args()

tok, model = load(args.model, args.threads)
if args.lora_rank:
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(model, LoraConfig(
        r=args.lora_rank, lora_alpha=2 * args.lora_rank, lora_dropout=0.0,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]))
data = Data(args.data)
samples = data.split("train")[: args.samples]
enc = []
for s in samples:
    p = tok(data.render(s), add_special_tokens=False)["input_ids"]
    r = tok(data.response(data.titles[s["target"]]), add_special_tokens=False)["input_ids"]
    enc.append((p, r))
opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=args.lr)
model.train()
tokens, losses, ends = 0, [], []
t0 = time.time()
for b in range(0, len(enc), args.batch):
    part = enc[b : b + args.batch]
    width = max(len(p) + len(r) for p, r in part)
    ids = torch.zeros((len(part), width), dtype=torch.long)
    labels = torch.full((len(part), width), -100, dtype=torch.long)
    mask = torch.zeros((len(part), width), dtype=torch.long)
    for i, (p, r) in enumerate(part):
        seq = p + r
        ids[i, : len(seq)] = torch.tensor(seq)
        labels[i, len(p) : len(seq)] = torch.tensor(r)
        mask[i, : len(seq)] = 1
        tokens += len(seq)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16_autocast):
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
    loss.backward()
    opt.step()
    opt.zero_grad()
    losses.append(loss.item())
    ends.append(time.time() - t0)
wall = time.time() - t0
kind = (f"LoRA r {args.lora_rank}" if args.lora_rank else "full") + (", bf16 autocast" if args.bf16_autocast else "")
print(f"peer sft ({kind}, batch {args.batch}): {len(enc)} samples in {wall:.1f} s, "
      f"{len(enc) / wall:.3f} samples/s, {tokens / wall:.1f} tokens/s, peak RSS {peak_rss_gb():.2f} GB, "
      f"losses {' '.join(f'{x:.4f}' for x in losses)}")
steps = [b - a for a, b in zip([0.0] + ends, ends)]
if len(steps) > 1:
    rest = steps[1:]
    print(f"step seconds: first {steps[0]:.1f}, then mean {sum(rest) / len(rest):.2f} "
          f"({' '.join(f'{x:.1f}' for x in rest)})")
