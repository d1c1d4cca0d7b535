"""Sampler settings of a trained QM9 run at a given NFE over seeds (strict validity, connectivity, uniqueness, novelty, FCD); writes JSON rows as they come.

    python benchmarks/qm9_settings.py RUN_DIR --out rows.json --settings 0:0 0:0.2 20:0.5 --seeds 0 1 --n 1000   # dfm-euler eta:omega
    python benchmarks/qm9_settings.py RUN_DIR --out rows.json --sampler ancestral --steps 50 100
"""
import argparse, json, time
from diffkit.cpu import flush_denormals
flush_denormals()
import torch
torch.set_num_threads(1)
from diffkit.runs import load_run, generate, evaluate

p = argparse.ArgumentParser()
p.add_argument("run"); p.add_argument("--out", required=True)
p.add_argument("--sampler", default="dfm-euler"); p.add_argument("--steps", type=int, nargs="+", default=[50])
p.add_argument("--settings", nargs="+", default=["0:0"], help="eta:omega for dfm-euler")
p.add_argument("--seeds", type=int, nargs="+", default=[0, 1]); p.add_argument("--n", type=int, default=500)
a = p.parse_args()
run = load_run(a.run)
run.recipe["eval"]["metrics"] = ["molecule-validity", "molecule-uniqueness", "molecule-novelty", "fcd"]
out = []
for steps in a.steps:
    for setting in (a.settings if a.sampler == "dfm-euler" else ["-"]):
        for seed in a.seeds:
            opts = {}
            if a.sampler == "dfm-euler":
                eta, omega = map(float, setting.split(":"))
                opts = {"eta": eta, "target_guidance": omega, "distortion": "polydec"}
            t0 = time.perf_counter()
            items, labels, timing = generate(run, a.n, sampler=a.sampler, steps=steps, seed=seed, options=opts)
            m = evaluate(run, items, labels)
            row = {"run": a.run, "sampler": a.sampler, "steps": steps, **opts, "seed": seed,
                   **{k: v for k, v in m.items() if isinstance(v, (int, float))}, "seconds": time.perf_counter() - t0}
            out.append(row); print(json.dumps(row), flush=True)
            json.dump(out, open(a.out, "w"), indent=1)
