"""The log-mel first stage on real spoken digits: what its decoder alone costs in quality and time.

Real held-out clips go through ``encode`` (40-band log-mel frames) and ``decode`` (Griffin-Lim, or a trained
mel-conditioned DiffWave with ``--vocoder DIR``), and are scored like samples by the plugin's judge against the
other real clips: class accuracy, FD (with its real-vs-real floor), IS, and the spectral convergence of the round
trip. This is the ceiling of a two-stage model that decodes with that vocoder: a perfect mel diffusion model
scores no better. Also the decoder's real-time factor (seconds of decoding per second of audio, one thread).

    python benchmarks/spoken_digits_mel.py --out benchmarks/results                 # Griffin-Lim, the recipe's 500 test clips
    python benchmarks/spoken_digits_mel.py --vocoder runs/vocoder --n 100 --out ...  # a trained DiffWave vocoder beside it
    python benchmarks/spoken_digits_mel.py --learned-steps 4000 --learned-minutes 10  # the learned one-pass vocoder, trained here
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import time
from pathlib import Path

import torch


def judge_cells(m: dict) -> tuple[str, str, str]:
    """Table cells of the judge's figures: accuracy, ``FD (floor)``, IS (``nan`` where a figure is missing). The floor is
    the one at the generated sample's size (training clips against the reference); without training clips in the
    context, the two halves of the reference, marked ``half``."""
    get = lambda key: m.get(key, float("nan"))  # noqa: E731
    floor = f"{get('spoken_digits_fd_floor'):.1f}" if "spoken_digits_fd_floor" in m else f"half {get('spoken_digits_fd_half_floor'):.1f}"
    return f"{get('spoken_digits_accuracy'):.3f}", f"{get('spoken_digits_fd'):.1f} ({floor})", f"{get('spoken_digits_is'):.2f}"


def score(name: str, rep, clips: list, labels: list, reference: list, reference_labels: list, space, train_clips: list | None = None) -> dict:
    from diffkit.evaluation import EvalContext, run_metrics

    from diffkit_audio.mel import spectral_convergence
    from diffkit_audio.metrics import mrstft_distance

    t0 = time.perf_counter()
    codes = rep.encode(clips)
    t1 = time.perf_counter()
    decoded = rep.decode(codes)
    t2 = time.perf_counter()
    ctx = EvalContext(generated=decoded, reference=reference, labels=labels, reference_labels=reference_labels, train=train_clips, space=space)
    metrics = run_metrics(["spoken-digits-accuracy", "spoken-digits-frechet", "spoken-digits-is"], ctx)
    audio_seconds = len(clips) * space.duration
    sc = [spectral_convergence(a, b) for a, b in zip(clips, decoded)]
    return {"decoder": name, "n": len(clips), "encode_seconds": t1 - t0, "decode_seconds": t2 - t1, "decode_real_time_factor": (t2 - t1) / audio_seconds,
            "spectral_convergence_mean": sum(sc) / len(sc), "mrstft_paired": mrstft_distance(decoded, clips, paired=True), "metrics": metrics, "decoded": decoded}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=500, help="held-out clips to round-trip (the recipe's test split has 500)")
    parser.add_argument("--n-iter", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--vocoder", default=None, help="a mel-conditioned DiffWave run directory (40 bands, hop 64) to compare")
    parser.add_argument("--learned-steps", type=int, default=0, help="train the learned one-pass vocoder for this many steps (0: no such row)")
    parser.add_argument("--learned-minutes", type=float, default=None, help="stop its training after this many minutes")
    parser.add_argument("--learned-channels", type=int, default=128)
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    from diffkit.bench import machine
    from diffkit.recipe import load_recipe

    from diffkit_audio.data import spoken_digits
    from diffkit_audio.mel import LogMel

    recipe = load_recipe("spoken-digits-mel")
    options = recipe["data"]["options"]
    train, test, val = (spoken_digits(s, **options) for s in ("train", "test", "val"))
    test_items = [test[i] for i in range(min(args.n, len(test)))]
    clips, labels = [c for c, _ in test_items], [int(y) for _, y in test_items]
    reference = [val[i][0] for i in range(len(val))]  # other real clips: the judge compares the round trip with them
    reference_labels = [int(val[i][1]) for i in range(len(val))]
    rep_options = {k: v for k, v in recipe["representation"]["options"].items() if k != "n_iter"}
    report = {"date": dt.date.today().isoformat(), "machine": machine(), "load_average": os.getloadavg()[0], "n": len(clips), "rows": []}
    train_clips = [train[i][0] for i in range(len(train))]
    real = LogMel(train.space, **{**rep_options, "vocoder": "griffin-lim"})
    real.fit(train_clips)

    class Identity:  # the real clips themselves, scored the same way: the row a perfect decoder reaches
        def encode(self, items):
            return list(items)

        def decode(self, items):
            return list(items)

    rows = [("real clips (no round trip)", Identity())]
    for n_iter in args.n_iter:
        rep = LogMel(train.space, **{**rep_options, "vocoder": "griffin-lim", "n_iter": n_iter})
        rep.load_state_dict(real.state_dict())
        rows.append((f"log-mel -> Griffin-Lim, {n_iter} iterations", rep))
    if args.vocoder:
        rep = LogMel(train.space, **{**rep_options, "vocoder": args.vocoder})
        rep.load_state_dict(real.state_dict())
        rows.append((f"log-mel -> DiffWave vocoder {args.vocoder}", rep))
    if args.learned_steps:
        rep = LogMel(train.space, **{**rep_options, "vocoder": "learned", "learned_steps": args.learned_steps, "learned_minutes": args.learned_minutes,
                                     "learned_channels": args.learned_channels})
        torch.manual_seed(0)
        fitted = rep.fit(train_clips)
        report["learned_vocoder_training"] = fitted["vocoder"]
        print(f"learned vocoder: {fitted['vocoder']}", flush=True)
        rows.append((f"log-mel -> learned vocoder, {fitted['vocoder']['steps']} steps in {fitted['vocoder']['seconds'] / 60:.1f} min", rep))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, rep in rows:
        row = score(name, rep, clips, labels, reference, reference_labels, train.space, train_clips)
        decoded = row.pop("decoded")
        if name.startswith("log-mel"):
            tag = "learned-vocoder" if "learned" in name else name.split(",")[-1].strip()
            folder = out / "spoken-digits-mel-samples" / tag.replace(" ", "-").replace("/", "_")
            train.space.write(decoded[:8], folder, labels=labels[:8])
        report["rows"].append(row)
        m = row["metrics"]
        print(f"{name}: accuracy {m.get('spoken_digits_accuracy', float('nan')):.3f}, FD {m.get('spoken_digits_fd', float('nan')):.1f} "
              f"(floor {m.get('spoken_digits_fd_floor', float('nan')):.1f}, half-reference {m.get('spoken_digits_fd_half_floor', float('nan')):.1f}), IS {m.get('spoken_digits_is', float('nan')):.2f}, "
              f"spectral convergence {row['spectral_convergence_mean']:.3f}, MR-STFT {row['mrstft_paired']:.3f}, decode RTF {row['decode_real_time_factor']:.4f}", flush=True)
    stem = out / f"spoken-digits-mel-{report['date']}"
    stem.with_suffix(".json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    lines = [f"# Log-mel first stage on real spoken digits ({report['date']})", "", f"{len(clips)} held-out clips round-tripped; judged against the val split. "
             f"Load average {report['load_average']:.1f}, {args.threads} thread(s).", "",
             "| decoder | accuracy | FD (floor) | IS | spectral convergence | MR-STFT (paired) | decode real-time factor |", "|---|---|---|---|---|---|---|"]
    for row in report["rows"]:
        m = row["metrics"]
        lines.append(f"| {row['decoder']} | {' | '.join(judge_cells(m))} | {row['spectral_convergence_mean']:.3f} | {row['mrstft_paired']:.3f} | {row['decode_real_time_factor']:.4f} |")
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
