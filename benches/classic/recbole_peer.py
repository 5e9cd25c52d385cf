"""RecBole 1.2.1 on exactly the split of a `minirec prepare` dataset, scored the way `minirec eval` scores ours.

   VENV/bin/python benches/classic/recbole_peer.py --data /work/exp/ind --out /work/exp/recbole \
       --model SASRec --loss CE --seeds 42,1,2,3 [--set n_heads=1 --set inner_size=64 ...] --name sasrec-ce

The split is ours: train.jsonl minus its newest tenth (by timestamp, ties in file order, as `minirec baseline`
holds out when valid.jsonl is empty) trains, that tenth early-stops on NDCG@10, test.jsonl is scored. RecBole
reads them as benchmark files (one sample a line, no augmentation: our samples are already every prefix).
Test samples are ranked over every item with RecBole's `full_sort_predict` (no history masking, as ours);
each run writes `seed-N/test_predictions.jsonl` (titles best first, each once: our predictions format) and
`test.json` with title- and item-level NDCG/HR@{5,10,20} per seed, the shape `table.py` reads.

Loss BCE is the SASRec paper's loss with one uniform negative (RecBole 1.2.1 ships only CE and BPR): the
model's BPR path, RecBole's own negative sampler, the loss -log σ(pos) - log(1 - σ(neg)).
"""
import argparse
import functools
import json
import math
import pathlib
import sys
import time

import numpy as np

# RecBole 1.2.1 predates NumPy 2 and torch 2.6: its Config re-aliases np.float_ / np.complex_ / np.unicode_
# (removed in NumPy 2) and torch.load now defaults to weights_only=True, which refuses its checkpoints. Two
# run-time shims, no edits to the installed package.
np.float_, np.complex_, np.unicode_ = np.float64, np.complex128, np.str_
import torch  # noqa: E402

torch.load = functools.partial(torch.load, weights_only=False)

from recbole.config import Config  # noqa: E402
from recbole.data import create_dataset, data_preparation  # noqa: E402
from recbole.data.interaction import Interaction  # noqa: E402
from recbole.model.sequential_recommender import GRU4Rec, SASRec, Caser  # noqa: E402
from recbole.trainer import Trainer  # noqa: E402
from recbole.utils import init_seed  # noqa: E402

KS = (5, 10, 20)
MODELS = {"SASRec": SASRec, "GRU4Rec": GRU4Rec, "Caser": Caser}


class BceLoss(torch.nn.Module):
    """-log σ(pos) - log(1 - σ(neg)): RecBole calls its BPR loss as loss_fct(pos_score, neg_score)."""

    def forward(self, pos, neg):
        return torch.nn.functional.softplus(-pos).mean() + torch.nn.functional.softplus(neg).mean()


class BceMixin:
    """A model on RecBole's BPR path (one sampled negative) with the BPR loss swapped for BCE, so each keeps
    its own forward and regularisers."""

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.loss_fct = BceLoss()


# Module-level classes, so RecBole's checkpoints (which pickle the config, model class included) can name
# them; each answers to its base's name, so Config loads the base model's default hyper-parameters.
class SASRecBCE(BceMixin, SASRec):
    pass


class GRU4RecBCE(BceMixin, GRU4Rec):
    pass


class CaserBCE(BceMixin, Caser):
    pass


BCE = {"SASRec": SASRecBCE, "GRU4Rec": GRU4RecBCE, "Caser": CaserBCE}
for _name, _cls in BCE.items():
    _cls.__name__ = _name


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def write_benchmark(data, work):
    """Our split as RecBole benchmark files `ind.{train,valid,test}.inter`; returns the test samples."""
    train = read_jsonl(data / "train.jsonl")
    valid = read_jsonl(data / "valid.jsonl")
    if not valid:
        train = sorted(train, key=lambda s: s["timestamp"])
        cut = len(train) - len(train) // 10
        train, valid = train[:cut], train[cut:]
    test = read_jsonl(data / "test.jsonl")
    ds = work / "ind"
    ds.mkdir(parents=True, exist_ok=True)
    for name, samples in (("train", train), ("valid", valid), ("test", test)):
        with open(ds / f"ind.{name}.inter", "w") as f:
            f.write("user_id:token\titem_id_list:token_seq\titem_id:token\n")
            for s in samples:
                f.write(f"{s['user']}\t{' '.join(s['history'])}\t{s['target']}\n")
    print(f"split: {len(train)} train, {len(valid)} valid, {len(test)} test", flush=True)
    return test


def config(args, seed, work, model_cls):
    c = {
        "data_path": str(work),
        "benchmark_filename": ["train", "valid", "test"],
        "USER_ID_FIELD": "user_id",
        "ITEM_ID_FIELD": "item_id",
        "load_col": {"inter": ["user_id", "item_id_list", "item_id"]},
        # one token space for history and target items (RecBole remaps each field apart otherwise)
        "alias_of_item_id": ["item_id_list"],
        "MAX_ITEM_LIST_LENGTH": 10,
        "eval_args": {"split": {"RS": [1.0, 0.0, 0.0]}, "order": "TO", "mode": "full"},
        "metrics": ["NDCG", "Hit"],
        "topk": [10],
        "valid_metric": "NDCG@10",
        "epochs": args.epochs,
        "stopping_step": args.patience,
        "train_batch_size": args.batch_size,
        "eval_batch_size": 512,
        "learning_rate": args.lr,
        "seed": seed,
        "reproducibility": True,
        "device": "cpu",
        "use_gpu": False,
        "checkpoint_dir": str(work / f"saved-{args.name}-{seed}"),
        "show_progress": False,
        "loss_type": "CE" if args.loss == "CE" else "BPR",
        "train_neg_sample_args": None
        if args.loss == "CE"
        else {"distribution": "uniform", "sample_num": 1, "alpha": 1.0, "dynamic": False, "candidate_num": 0},
    }
    for kv in args.set:
        k, v = kv.split("=", 1)
        try:
            c[k] = json.loads(v)
        except json.JSONDecodeError:
            c[k] = v
    return Config(model=model_cls, dataset="ind", config_dict=c)


def score_matrix(model, dataset, test):
    """Scores [N, items] of the test samples (the padding column at -inf), rows in test order."""
    tok = dataset.field2token_id["item_id"]
    utok = dataset.field2token_id["user_id"]
    out = []
    model.eval()
    with torch.no_grad():
        for i in range(0, len(test), 512):
            chunk = test[i : i + 512]
            seq = torch.zeros(len(chunk), 10, dtype=torch.long)
            for r, s in enumerate(chunk):
                ids = [tok[h] for h in s["history"][-10:]]
                seq[r, : len(ids)] = torch.tensor(ids)
            inter = Interaction(
                {
                    "item_id_list": seq,
                    "item_length": torch.tensor([min(len(s["history"]), 10) for s in chunk]),
                    "user_id": torch.tensor([utok[s["user"]] for s in chunk]),
                }
            )
            sc = model.full_sort_predict(inter).view(len(chunk), -1)
            sc[:, 0] = -math.inf
            out.append(sc)
    return torch.cat(out), tok


def metrics_of(ranks, n):
    """NDCG/HR@k from 0-based ranks (None: not ranked within max k)."""
    m = {}
    for k in KS:
        m[f"ndcg@{k}"] = sum(1 / math.log2(r + 2) for r in ranks if r is not None and r < k) / n
        m[f"hr@{k}"] = sum(1 for r in ranks if r is not None and r < k) / n
    return m


def evaluate(scores, tok, test, titles, pred_path):
    id_of = {v: k for k, v in tok.items()}
    order = torch.argsort(scores, dim=1, descending=True)[:, :200]
    title_ranks, item_ranks = [], []
    with open(pred_path, "w") as f:
        for s, row in zip(test, order.tolist()):
            items = [id_of[j] for j in row if j != 0]
            item_ranks.append(items.index(s["target"]) if s["target"] in items else None)
            ranked, seen = [], set()
            for it in items:
                t = titles[it]
                if t not in seen:
                    seen.add(t)
                    ranked.append(t)
                if len(ranked) == max(KS):
                    break
            tgt = titles[s["target"]]
            title_ranks.append(ranked.index(tgt) if tgt in ranked else None)
            f.write(json.dumps({"target": tgt, "ranked": ranked}) + "\n")
    m = metrics_of(title_ranks, len(test))
    m["item_level"] = metrics_of(item_ranks, len(test))
    return m


def run_seed(args, seed, work, test, titles, model_cls):
    cfg = config(args, seed, work, model_cls)
    init_seed(cfg["seed"], cfg["reproducibility"])
    dataset = create_dataset(cfg)
    train_data, valid_data, _ = data_preparation(cfg, dataset)
    init_seed(cfg["seed"], cfg["reproducibility"])
    model = model_cls(cfg, train_data.dataset)
    trainer = Trainer(cfg, model)
    start = time.time()
    best, _ = trainer.fit(train_data, valid_data, saved=True, show_progress=False)
    seconds = time.time() - start
    model.load_state_dict(torch.load(trainer.saved_model_file)["state_dict"])
    scores, tok = score_matrix(model, dataset, test)
    seed_dir = args.out / args.name / f"seed-{seed}"
    seed_dir.mkdir(parents=True, exist_ok=True)
    m = evaluate(scores, tok, test, titles, seed_dir / "test_predictions.jsonl")
    m["best_valid_ndcg@10"] = best
    m["train_seconds"] = round(seconds, 1)
    print(f"{args.name} seed {seed}: NDCG@10 {m['ndcg@10']:.4f} HR@10 {m['hr@10']:.4f} "
          f"(item {m['item_level']['ndcg@10']:.4f} / {m['item_level']['hr@10']:.4f})", flush=True)
    return m


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data", type=pathlib.Path, required=True)
    p.add_argument("--out", type=pathlib.Path, required=True)
    p.add_argument("--model", choices=sorted(MODELS), default="SASRec")
    p.add_argument("--loss", choices=["CE", "BCE", "BPR"], default="CE")
    p.add_argument("--seeds", default="42,1,2,3")
    p.add_argument("--name", required=True)
    p.add_argument("--epochs", type=int, default=200)
    p.add_argument("--patience", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--set", action="append", default=[], help="a RecBole option, KEY=VALUE")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    work = args.out / "_recbole"
    test = write_benchmark(args.data, work)
    titles = {r["id"]: r["title"] for r in read_jsonl(args.data / "catalog.jsonl")}
    model_cls = BCE[args.model] if args.loss == "BCE" else MODELS[args.model]
    seeds = {}
    for seed in (int(s) for s in args.seeds.split(",")):
        seeds[str(seed)] = run_seed(args, seed, work, test, titles, model_cls)
    result = {"peer": "RecBole 1.2.1", "model": args.model, "loss": args.loss, "set": args.set, "seeds": seeds}
    (args.out / args.name / "test.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    sys.exit(main())
