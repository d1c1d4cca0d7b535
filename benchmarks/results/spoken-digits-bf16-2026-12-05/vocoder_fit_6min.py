"""Fit a log-mel vocoder afresh (the shipped run's options, changed by a JSON argument) for MINUTES on one thread; FD of 500
training clips' real frames and of the shipped diffusion's 500 sampled codes (seed 0, guidance 2.5 in (0.5, 0.9], 10 steps)
through it. The scratch script behind vocoder-6min-*.json, run twice side by side (one per core) on the model shipped before:

    python vocoder_fit_6min.py vocoder-6min-fp32.json 6 '{}'
    python vocoder_fit_6min.py vocoder-6min-bf16.json 6 '{"learned_precision": "bf16"}'
"""
import sys, json, time, torch
from diffkit.cpu import flush_denormals
flush_denormals(); torch.set_num_threads(1)
from diffkit.metrics import feature_statistics, frechet_distance
from diffkit.pretrained import resolve
from diffkit.evaluation import split_items
from diffkit.runs import load_run, generate
from diffkit_audio.metrics import digit_classifier
out, minutes, changes = sys.argv[1], float(sys.argv[2]), json.loads(sys.argv[3])
run = load_run(resolve("spoken-digits-mel")[0])
rep, space = run.representation, run.data_space
judge = digit_classifier(space.sample_rate, space.length)
reference, _ = split_items(run.split(run.reference_split))
train, _ = split_items(run.split("train"))
others = [train[i] for i in torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[:500].tolist()]
feats = lambda items: torch.cat([judge.features(torch.stack([space.validate(w) for w in items[i:i+250]])) for i in range(0, len(items), 250)]).detach().double().numpy()
ref = feature_statistics(feats(reference))
fd = lambda items: frechet_distance(*feature_statistics(feats(items)), *ref)
kept, run.representation = run.representation, None
codes, _, _ = generate(run, 500, guidance=2.5, guidance_interval=(0.5, 0.9), steps=10, seed=0)
run.representation = kept
torch.manual_seed(0)
new = type(rep)(space, **{**rep.options, "learned_minutes": minutes, "learned_steps": 10**6, **changes})
t = time.perf_counter(); report = new.fit(train); secs = time.perf_counter() - t
new.mean, new.std = rep.mean, rep.std
with torch.no_grad():
    r = {"changes": changes, "minutes": minutes, "fit": report.get("vocoder"), "real_frames_fd": fd(new.decode(rep.encode(others))), "sampled_fd": fd(new.decode(codes))}
print(json.dumps(r)); open(out, "w").write(json.dumps(r, indent=1))
