"""Where a two-stage spoken-digit model loses its FD: the diffusion stage or the vocoder.

The audio judge (diffkit_audio.metrics.DigitClassifier) reads 40-band log-mel frames at the same resolution
as the ``log-mel`` representation (n_fft 256, hop 64), so a sampled code can be scored twice: its frames fed to the
judge directly (the diffusion stage alone) and its decoded clip fed through the judge's own front end (both
stages). Real clips get the same two paths (their frames, and their frames round-tripped through the vocoder), so
each figure has a real-vs-real counterpart:

- ``real clips``: the judge on real waves (training clips against the reference set: the floor at the same
  sample size as every other row, as ``spoken_digits_fd_floor`` measures it);
- ``real frames``: the judge on the same clips' log-mel frames (differs from the row above only where the
  representation's floor of 1e-5 and the judge's own front end part);
- ``real frames -> vocoder``: the learned vocoder's loss alone;
- ``sampled frames``: the diffusion's loss alone;
- ``sampled frames -> vocoder``: what ``diffkit sample`` delivers.

With ``--vocoder-noise``, vocoders trained afresh on the run's training clips with those conditioning-augmentation
levels (``learned_noise``, diffkit_audio.vocoder; ``--vocoder-minutes`` each) decode the same real and sampled frames
in further rows, so a decoder change is measured on the very codes the first rows scored.

    python benchmarks/spoken_digits_stages.py spoken-digits-mel --settings 2@10 --n 500
    python benchmarks/spoken_digits_stages.py spoken-digits-mel --vocoder-noise 0 1 --vocoder-minutes 8
    python benchmarks/spoken_digits_stages.py spoken-digits-mel --vocoder-noise 1 2 --vocoder-kind istft --vocoder-layers 8
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import time
from pathlib import Path

import torch


def judge_frames(frames: torch.Tensor) -> torch.Tensor:
    """The judge's input from log-mel frames ``B×bands×frames`` (``log(max(mel, 1e-5))``): ``log(mel + 1e-6)``
    shifted so each clip's maximum is 0 and floored at -12, as ``DigitClassifier.log_mel`` does for waves."""
    z = torch.log(frames.exp() + 1e-6)
    z = z - z.amax(dim=(1, 2), keepdim=True)
    return z.clamp(min=-12.0)[:, None]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a two-stage run directory or shipped model name (a log-mel representation)")
    parser.add_argument("--settings", nargs="+", default=["2@10"], help="GUIDANCE[/T_LO-T_HI]@STEPS[@SAMPLER] per row (as in spoken_digits_runs.py)")
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--vocoder-noise", type=float, nargs="*", default=[], help="retrain the learned vocoder with these augmentation levels")
    parser.add_argument("--vocoder-minutes", type=float, default=8.0, help="training time of each retrained vocoder")
    parser.add_argument("--vocoder-kind", default=None, help="the retrained vocoders' learned_kind (upsample or istft; default: the run's)")
    parser.add_argument("--vocoder-channels", type=int, default=None, help="the retrained vocoders' learned_channels (default: the run's)")
    parser.add_argument("--vocoder-layers", type=int, default=None, help="the retrained istft vocoders' learned_layers (default: the run's)")
    parser.add_argument("--out", default=f"benchmarks/results/spoken-digits-stages-{dt.date.today().isoformat()}.json")
    args = parser.parse_args(argv)
    from diffkit.cpu import flush_denormals

    flush_denormals()
    torch.set_num_threads(args.threads)
    from diffkit.metrics import feature_statistics, frechet_distance
    from diffkit.pretrained import resolve
    from diffkit.evaluation import split_items
    from diffkit.runs import generate, load_run
    from spoken_digits_runs import parse_setting

    from diffkit_audio.metrics import digit_classifier

    run = load_run(resolve(args.run)[0])
    rep, space = run.representation, run.data_space
    if rep is None or not hasattr(rep, "frames_of"):
        raise SystemExit(f"{args.run} has no log-mel representation; this diagnostic splits a two-stage run's FD between its stages")
    judge = digit_classifier(space.sample_rate, space.length)
    reference, _ = split_items(run.split(run.reference_split))
    train, _ = split_items(run.split("train"))
    others = [train[i] for i in torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[: args.n].tolist()]

    @torch.no_grad()
    def features_of_waves(items):
        x = torch.stack([space.validate(w) for w in items])
        return torch.cat([judge.features(x[i:i + 256]) for i in range(0, len(x), 256)]).double().numpy()

    @torch.no_grad()
    def features_of_frames(frames):
        return torch.cat([judge.features_of_log_mel(judge_frames(frames[i:i + 256])) for i in range(0, len(frames), 256)]).double().numpy()

    ref_stats = feature_statistics(features_of_waves(reference))
    fd = lambda feats: max(0.0, frechet_distance(*feature_statistics(feats), *ref_stats))  # noqa: E731
    report = {"date": dt.date.today().isoformat(), "run": args.run, "n": args.n, "n_reference": len(reference), "threads": args.threads,
              "load_average_start": os.getloadavg()[0], "rows": []}
    real_codes = rep.encode(others)
    real_frames = rep.frames_of(real_codes)
    rows = [("real clips", None, features_of_waves(others)), ("real frames", None, features_of_frames(real_frames)),
            ("real frames -> vocoder", None, features_of_waves(rep.decode(real_codes)))]
    sampled = []
    for text in args.settings:
        s = parse_setting(text)
        kept, run.representation = run.representation, None  # generate() then returns the codes undecoded
        try:
            t0 = time.perf_counter()
            codes, _, _ = generate(run, args.n, **s, seed=0)
            seconds = time.perf_counter() - t0
        finally:
            run.representation = kept
        sampled.append((text, codes))
        rows += [(f"sampled frames ({text})", seconds, features_of_frames(rep.frames_of(codes))),
                 (f"sampled frames -> vocoder ({text})", None, features_of_waves(rep.decode(codes)))]
    for noise in args.vocoder_noise:
        torch.manual_seed(0)
        changes = {"learned_kind": args.vocoder_kind, "learned_channels": args.vocoder_channels, "learned_layers": args.vocoder_layers}
        options = {**rep.options, **{k: v for k, v in changes.items() if v is not None}}
        retrained = type(rep)(space, **{**options, "learned_noise": noise, "learned_minutes": args.vocoder_minutes, "learned_steps": 10**6})
        report.setdefault("vocoders", {})[str(noise)] = retrained.fit(train)
        retrained.mean, retrained.std = rep.mean, rep.std  # the run's own standardisation decodes its codes
        which = f"{options.get('learned_kind', 'upsample')} vocoder retrained, noise {noise:g}"
        rows.append((f"real frames -> {which}", None, features_of_waves(retrained.decode(real_codes))))
        rows += [(f"sampled frames -> {which} ({text})", None, features_of_waves(retrained.decode(codes))) for text, codes in sampled]
    for name, seconds, feats in rows:
        row = {"row": name, "fd": fd(feats), **({"sampling_seconds": seconds} if seconds is not None else {})}
        report["rows"].append(row)
        print(f"{name}: FD {row['fd']:.1f}", flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    lines = [f"# Where the two-stage model's FD is lost ({report['date']})", "",
             f"`{args.run}`; {args.n} clips per row against the {len(reference)} reference clips, in the judge's 128-d features; "
             f"{args.threads} torch thread(s), load average {report['load_average_start']:.1f} at the start.", "",
             "| row | FD |", "|---|---|"] + [f"| {r['row']} | {r['fd']:.1f} |" for r in report["rows"]]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
