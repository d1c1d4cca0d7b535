# The sweep behind spoken-digits-tune-2026-12-04.md, as it was run (written before `diffkit tune-first-stage`, which now does the same:
# reconstructions from the last levels of the 10-step DPM-Solver++(2M) grid at guidance 2, then the vocoder at a quarter of its learning rate).
# usage: python sweep_tune.py THREADS MINUTES K_LO K_HI SHARE LR   (K: the index of the first level in the grid; 5..7 = the last 5..3 levels)
"""Experiment: fine-tune the shipped vocoder on frames the diffusion itself produced from partly-noised real codes."""
import sys, time, json, math, copy
import torch
from diffkit.cpu import flush_denormals
flush_denormals()
torch.set_num_threads(int(sys.argv[1]) if len(sys.argv) > 1 else 2)
MIN = float(sys.argv[2]) if len(sys.argv) > 2 else 5.0
KLO, KHI = (int(sys.argv[3]), int(sys.argv[4])) if len(sys.argv) > 4 else (2, 7)
MIX = float(sys.argv[5]) if len(sys.argv) > 5 else 0.5
LR = float(sys.argv[6]) if len(sys.argv) > 6 else 5e-4
from diffkit.pretrained import resolve
from diffkit.runs import load_run
from diffkit.evaluation import split_items
from diffkit.samplers import make_times, resolve as resolve_sampler
from diffkit.denoiser import guided
from diffkit_audio.vocoder import spectral_loss

run = load_run(resolve("spoken-digits-mel")[0])
rep = run.representation
train, labels = split_items(run.split("train"))
print("train clips", len(train), flush=True)
waves = torch.stack([run.data_space.validate(w) for w in train])
labels = torch.tensor(labels)
codes = rep.encode(train)
state = run.space.collate(codes)
diff = run.denoiser.diffusion
fn, spec = resolve_sampler("dpmpp-2m")
times = make_times(diff, 10, spec.schedule)
print("times", [round(float(t), 4) for t in times], flush=True)
gen = torch.Generator().manual_seed(1)
made = []
t0 = time.perf_counter()
B = 128
for start in range(0, len(train), B):
    idx = torch.arange(start, min(start + B, len(train)))
    k = int(torch.randint(KLO, KHI + 1, (1,), generator=gen))
    sub = type(state)({n: v[idx] for n, v in state.items()})
    t = torch.full((len(idx),), float(times[k]))
    x_t, _ = diff.noise(sub, t, gen)
    out = fn(guided(run.denoiser, labels[idx], 2.0), x_t, times[k:], generator=gen)
    made.append(run.space.decode(out))
print("made", len(train), "in", time.perf_counter() - t0, flush=True)
made_codes = [c for batch in made for c in batch]
gen_frames = rep.frames_of(made_codes)
real_frames = rep.frames_of(codes)
print("gen vs real frame L1", float((gen_frames - real_frames).abs().mean()), flush=True)
torch.save({"gen": gen_frames, "k": (KLO, KHI)}, f"/work/runs/gta-frames-{KLO}-{KHI}.pt")

voc = rep.learned_vocoder
orig = copy.deepcopy(voc.state_dict())
band_std = rep.std[:, None]
opt = torch.optim.AdamW(voc.parameters(), lr=LR, betas=(0.8, 0.99), weight_decay=0.0)
t0, step = time.perf_counter(), 0
voc.train()
noise = rep.options.get("learned_noise", 0.0)
print("vocoder noise", noise, flush=True)
with torch.enable_grad():
    while True:
        frac = (time.perf_counter() - t0) / (60 * MIN)
        if frac >= 1: break
        for g in opt.param_groups: g["lr"] = LR * 0.5 * (1 + math.cos(math.pi * frac))
        idx = torch.randint(len(waves), (16,), generator=gen)
        x, m, mg = waves[idx], real_frames[idx], gen_frames[idx]
        use_gen = (torch.rand(16, 1, 1, generator=gen) < MIX).float()
        m_real_in = m + (noise * torch.rand(16, 1, 1, generator=gen) * band_std * torch.randn(m.shape, generator=gen) if noise else 0)
        m_in = use_gen * mg + (1 - use_gen) * m_real_in
        x_hat = voc(m_in)
        loss = spectral_loss(x_hat, x) + (rep.log_mel(x_hat) - m).abs().mean()
        opt.zero_grad(); loss.backward(); torch.nn.utils.clip_grad_norm_(voc.parameters(), 1.0); opt.step()
        step += 1
        if step % 200 == 0: print("step", step, float(loss), flush=True)
voc.eval()
print("finetune steps", step, flush=True)
from safetensors.torch import save_file
save_file({k: v.contiguous() for k, v in voc.state_dict().items()}, f"/work/runs/gta-voc-{KLO}-{KHI}-{MIX}-{MIN}.safetensors")
