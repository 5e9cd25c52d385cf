import json, sys
for r in ["riser", "grpo"]:
    L = [json.loads(l) for l in open(f"/tmp/r4/{r}/rl_log.jsonl") if '"mean_reward"' in l]
    q = len(L) // 4
    f = lambda k, xs: sum((x[k] or 0) for x in xs) / len(xs)
    m = json.load(open(f"/tmp/r4/{r}.json"))
    print(r, "steps", len(L), "reward %.4f -> %.4f" % (f("mean_reward", L[:q]), f("mean_reward", L[-q:])),
          "entropy %.3f -> %.3f" % (f("entropy", L[:q]), f("entropy", L[-q:])),
          "allfail %.2f" % f("all_fail_share", L), "distinct %.1f -> %.1f" % (f("distinct_rollouts", L[:q]), f("distinct_rollouts", L[-q:])),
          "update_s %.2f" % f("update_s", L),
          " ".join("%s=%.4f" % (k, m[k]) for k in ["ndcg@5","ndcg@10","ndcg@20","hr@5","hr@10","hr@20"]))
