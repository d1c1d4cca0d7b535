# Scores vocoder weights (files written by sweep_tune.py) on 500 real and 500 sampled codes of the shipped spoken-digits-mel.
import sys, os, json, torch
from pathlib import Path
sys.path.insert(0, "/work/main/benchmarks")
from diffkit.cpu import flush_denormals
flush_denormals()
torch.set_num_threads(2)
from safetensors.torch import load_file
from diffkit.metrics import feature_statistics, frechet_distance
from diffkit.pretrained import resolve
from diffkit.evaluation import split_items
from diffkit.runs import generate, load_run
from diffkit_audio.metrics import digit_classifier
run = load_run(resolve("spoken-digits-mel")[0])
rep, space = run.representation, run.data_space
judge = digit_classifier(space.sample_rate, space.length)
reference, _ = split_items(run.split(run.reference_split))
train, _ = split_items(run.split("train"))
others = [train[i] for i in torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[:500].tolist()]
feat = lambda items: torch.cat([judge.features(torch.stack([space.validate(w) for w in items])[i:i+256]) for i in range(0, len(items), 256)]).detach().double().numpy()
ref = feature_statistics(feat(reference))
fd = lambda items: max(0.0, frechet_distance(*feature_statistics(feat(items)), *ref))
G = float(os.environ.get("G", "2"))
S = int(os.environ.get("S", "10"))
SAMP = os.environ.get("SAMP", "dpmpp-2m")
cache = Path(f"/work/runs/codes-500-{G}-{S}-{SAMP}.pt")
if cache.exists():
    codes = torch.load(cache)
else:
    kept, run.representation = run.representation, None
    with torch.no_grad():
        codes, _, _ = generate(run, 500, sampler=SAMP, steps=S, guidance=G, seed=0)
    run.representation = kept
    codes = torch.stack(codes); torch.save(codes, cache)
codes = list(codes)
real_codes = rep.encode(others)
orig = {k: v.clone() for k, v in rep.learned_vocoder.state_dict().items()}
res = {}
for name in ["shipped"] + sys.argv[1:]:
    rep.learned_vocoder.load_state_dict(orig if name == "shipped" else load_file(name))
    with torch.no_grad():
        r = {"real": fd(rep.decode(real_codes)), "sampled": fd(rep.decode(codes))}
    res[name] = r
    print(name, {k: round(v, 1) for k, v in r.items()}, flush=True)
