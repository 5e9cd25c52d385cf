"""What both peer harnesses share: minirec's prepared data rendered exactly as minirec renders it
(crates/minirec-data/src/prompt.rs), the HF directory `minirec convert` writes, and peak RSS."""
import json
import os
import resource

import torch
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast


def load(model_dir, threads):
    torch.set_num_threads(threads)
    tok = PreTrainedTokenizerFast(tokenizer_file=os.path.join(model_dir, "tokenizer.json"))
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    return tok, model


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


class Data:
    def __init__(self, data_dir):
        self.prompt = json.load(open(os.path.join(data_dir, "prompt.json")))
        self.titles = {r["id"]: r["title"] for r in read_jsonl(os.path.join(data_dir, "catalog.jsonl"))}
        self.dir = data_dir

    def split(self, name):
        return read_jsonl(os.path.join(self.dir, f"{name}.jsonl"))

    def render(self, sample):
        p = self.prompt
        hist = "".join(f' "{self.titles[i]}"' for i in sample["history"])
        return f'{p["instruction"]}\n{p["history_intro"]}{hist}\n{p["response_header"]}\n'

    def response(self, title):
        return f'"{title}"\n'


def peak_rss_gb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1048576
