"""A small learned mel vocoder: log-mel frames to a wave in one forward pass, trained on spectral losses.

The network (``MelVocoder``) maps ``B×n_mels×F`` log-mel frames to ``B×1×(F·hop)`` samples::

    h = Conv1d_7(n_mels -> C)(m)                                  (frames)
    for each stride s of hop = s_1 s_2 ... (s <= 4):              (channels halve at each stage)
        h = Conv1d_7(C_i -> C_i/2)(LeakyReLU(NearestUpsample_s(h)))
        h = h + sum over dilations d in (1, 3, 9): Conv1d_3,d(LeakyReLU(h))   (residual, one conv per dilation)
    x = tanh(Conv1d_7(C_last -> 1)(LeakyReLU(h)))

Nearest-neighbour upsampling followed by a convolution, not a transposed convolution, so that the output carries
no checkerboard pattern at the frame rate (periodic lines in the spectrogram).

It is trained (``train_vocoder``) with no adversary, on the magnitude losses alone, which leave phase free:

    L = mean over resolutions (n_fft, hop) in RESOLUTIONS of
          || |X| - |X^| ||_F / || |X| ||_F  +  mean | log(|X| + e) - log(|X^| + e) |      (multi-resolution STFT)
        + mean | logmel(x) - logmel(x^) |                                                 (the conditioning's frames)

Real clips supply ``(logmel(x), x)`` pairs. With ``noise > 0`` the input frames are augmented (Ho et al.'s
conditioning augmentation for cascaded diffusion models): each clip's frames get Gaussian noise of a level
``u * noise``, ``u ~ U(0, 1)`` per clip, in units of each band's deviation over the training clips, while the
targets stay the clean clip and its clean frames::

    m_in = logmel(x) + u * noise * std_band * z,      z ~ N(0, I)

so the vocoder learns to read through the residual noise a few-step diffusion leaves in the frames it samples
instead of voicing it (a sampled frame sequence is far rougher than a real one; the vocoder trained on clean
frames turns that roughness into broadband noise). One evaluation per clip makes it far cheaper to sample than a
diffusion vocoder (``diffwave`` with a mel field), which is the point on CPUs; the diffusion vocoder remains the
choice when the budget allows it.

``IstftVocoder`` reaches the wave another way: it never runs at the sample rate. A stack of residual blocks at the
frame rate predicts, for each frame, the complex STFT of the clip (a log-magnitude and a phase per frequency bin of a
Hann window of ``4 hop``), and the inverse STFT (overlap-add) gives the samples::

    h = LayerNorm(Conv1d_7(n_mels -> C)(m'))                        (m': the frames, the last repeated once)
    for each layer: h = h + gamma * W_2 GELU(W_1 LayerNorm(DepthwiseConv1d_7(h)))   (per-channel scale gamma)
    log|S|, phi = Linear(C -> 2 (n_fft/2 + 1))(LayerNorm(h))
    x = iSTFT(exp(min(log|S|, 6)) e^{i phi})                        (hop, Hann window n_fft = 4 hop, centred)

Every convolution sees ``T / hop`` positions instead of ``T``, so a network of millions of weights trains faster on
a CPU than the upsampling one of a hundred thousand, and the phase comes from the same losses through the overlap of
neighbouring frames. It is trained by the same ``train_vocoder``. (The design follows the frame-rate Fourier vocoders
of the literature, Vocos among them, without their adversarial losses.)
"""
from __future__ import annotations

import math
import time

import torch
from torch import nn
from torch.nn import functional as F

from diffkit.cpu import resolve_precision

from diffkit_audio.metrics import RESOLUTIONS


def upsampling_strides(hop: int) -> list[int]:
    """``hop`` as a product of strides of 4 (then 2, then 3): 64 -> [4, 4, 4], 128 -> [4, 4, 4, 2]."""
    out, rest = [], int(hop)
    for s in (4, 2, 3):
        while rest % s == 0 and rest > 1:
            out.append(s)
            rest //= s
    if rest != 1:
        raise ValueError(f"mel vocoder: hop {hop} has a prime factor above 3; use a hop such as 64, 128 or 192")
    return out


class MelVocoder(nn.Module):
    """See the module docstring. ``channels`` is the width after the input convolution."""

    def __init__(self, n_mels: int = 40, hop: int = 64, channels: int = 128, dilations=(1, 3, 9)):
        super().__init__()
        self.hop = int(hop)
        self.strides = upsampling_strides(hop)
        self.pre = nn.Conv1d(n_mels, channels, 7, padding=3)
        self.ups, self.blocks = nn.ModuleList(), nn.ModuleList()
        c = channels
        for _ in self.strides:
            self.ups.append(nn.Conv1d(c, max(c // 2, 8), 7, padding=3))
            c = max(c // 2, 8)
            self.blocks.append(nn.ModuleList(nn.Conv1d(c, c, 3, padding=d, dilation=d) for d in dilations))
        self.post = nn.Conv1d(c, 1, 7, padding=3)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        h = self.pre(mel)
        for stride, up, block in zip(self.strides, self.ups, self.blocks):
            h = up(F.leaky_relu(F.interpolate(h, scale_factor=stride, mode="nearest"), 0.1))
            for conv in block:
                h = h + conv(F.leaky_relu(h, 0.1))
        return torch.tanh(self.post(F.leaky_relu(h, 0.1)))


class _FrameBlock(nn.Module):
    """One residual block of :class:`IstftVocoder`: depthwise convolution over frames (kernel 7), channel LayerNorm,
    an MLP of width 3C with GELU, and a per-channel scale (starting at 0.1) on the residual branch."""

    def __init__(self, channels: int, kernel: int = 7):
        super().__init__()
        self.mix = nn.Conv1d(channels, channels, kernel, padding=kernel // 2, groups=channels)
        self.norm = nn.LayerNorm(channels)
        self.up, self.down = nn.Linear(channels, 3 * channels), nn.Linear(3 * channels, channels)
        self.gamma = nn.Parameter(torch.full((channels,), 0.1))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        y = self.down(F.gelu(self.up(self.norm(self.mix(h).transpose(1, 2)))))
        return h + (self.gamma * y).transpose(1, 2)


class IstftVocoder(nn.Module):
    """Frames to wave through a predicted STFT and its inverse (module docstring). ``channels`` wide, ``layers`` blocks;
    ``n_fft = 4 hop``, the representation's analysis window, so one predicted STFT frame stands for one mel frame."""

    max_log_magnitude = 6.0
    """``exp(6)`` ~ 400: far above any STFT magnitude of a clip in [-1, 1] at ``n_fft <= 1024`` that matters, and it keeps
    an untrained network's first steps finite."""

    def __init__(self, n_mels: int = 40, hop: int = 64, channels: int = 128, layers: int = 8):
        super().__init__()
        self.hop, self.n_fft = int(hop), 4 * int(hop)
        self.pre = nn.Conv1d(n_mels, channels, 7, padding=3)
        self.pre_norm = nn.LayerNorm(channels)
        self.blocks = nn.ModuleList(_FrameBlock(channels) for _ in range(int(layers)))
        self.post_norm = nn.LayerNorm(channels)
        self.head = nn.Linear(channels, 2 * (self.n_fft // 2 + 1))
        self.register_buffer("window", torch.hann_window(self.n_fft), persistent=False)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        frames = mel.shape[-1]
        m = F.pad(mel, (0, 1), mode="replicate")  # a centred STFT of frames*hop samples has frames+1 frames
        h = self.pre_norm(self.pre(m).transpose(1, 2)).transpose(1, 2)
        for block in self.blocks:
            h = block(h)
        with torch.autocast(mel.device.type, enabled=False):  # the head and the inverse STFT always in float32 (a phase in bf16 is 3 digits)
            log_magnitude, phase = self.head(self.post_norm(h.float().transpose(1, 2))).transpose(1, 2).chunk(2, dim=1)
            spectrum = torch.polar(torch.exp(log_magnitude.clamp(max=self.max_log_magnitude)), phase)
            wave = torch.istft(spectrum, self.n_fft, self.hop, window=self.window, center=True, length=frames * self.hop)
        return wave[:, None]


VOCODER_KINDS = {"upsample": MelVocoder, "istft": IstftVocoder}
"""The learned vocoders by name (``LogMel``'s ``learned_kind``)."""


def spectral_loss(x_hat: torch.Tensor, x: torch.Tensor, resolutions=RESOLUTIONS, eps: float = 1e-5) -> torch.Tensor:
    """The multi-resolution STFT term of the module docstring (a differentiable twin of ``mrstft_distance(paired=True)``)."""
    total = x.new_zeros(())
    for n_fft, hop in resolutions:
        window = torch.hann_window(n_fft, device=x.device)
        mag = lambda w: torch.stft(w.reshape(-1, w.shape[-1]), n_fft, hop, window=window, return_complex=True).abs()  # noqa: E731
        m_hat, m = mag(x_hat), mag(x)
        sc = (m_hat - m).flatten(1).norm(dim=1) / m.flatten(1).norm(dim=1).clamp_min(eps)
        total = total + sc.mean() + (torch.log(m_hat + eps) - torch.log(m + eps)).abs().mean()
    return total / len(resolutions)


def train_vocoder(vocoder: MelVocoder, waves: torch.Tensor, log_mel, *, steps: int, minutes: float | None = None, batch_size: int = 16,
                  lr: float = 2e-3, seed: int = 0, progress=None, noise: float = 0.0, band_std: torch.Tensor | None = None,
                  inputs: torch.Tensor | None = None, share: float = 0.0, precision: str = "fp32") -> dict:
    """Train ``vocoder`` on ``B×1×T`` real ``waves`` (``log_mel(waves)`` gives its input frames) for ``steps`` Adam steps
    with a cosine decay, or until ``minutes`` have passed, whichever comes first. Returns a JSON report.

    ``noise``: the largest conditioning-augmentation level (module docstring), in units of ``band_std`` (each band's
    deviation; default: measured on ``waves``); 0 trains on clean frames.

    ``inputs`` (``B×n_mels×frames``, one row per wave) with ``share``: each batch item is, with probability ``share``,
    voiced from its row of ``inputs`` instead of its own (augmented) frames, against the same target wave and frames.
    The rows are the diffusion's reconstructions of the waves' frames (``LogMel.tune_decoder``), so the vocoder
    learns to voice what sampling hands it.

    ``precision``: ``"bf16"`` runs the network's forward pass under bfloat16 autocast (the weights, the optimiser, the
    losses and ``IstftVocoder``'s head and inverse STFT stay float32). On a CPU with bfloat16 units (Intel AMX,
    AVX-512 BF16) a step of the 128-wide ``IstftVocoder`` takes about 0.8 of its float32 time, a 256-wide one about
    0.6-0.65 (an Intel Xeon with AMX, an AMD EPYC with AVX-512 BF16); a CPU with neither emulates bfloat16 and may well
    be slower than ``"fp32"``. ``"auto"`` is bf16 where the CPU has them (:func:`diffkit.cpu.resolve_precision`); the
    report names what ran."""
    if not (noise >= 0 and math.isfinite(noise)):
        raise ValueError(f"mel vocoder: the augmentation noise level must be a finite number >= 0, got {noise}")
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"mel vocoder: share must lie in [0, 1], got {share}")
    requested = precision
    try:
        precision = resolve_precision(precision, str(waves.device))
    except ValueError as err:
        raise ValueError(f"mel vocoder: {err}") from None
    if inputs is not None and inputs.shape[0] != len(waves):
        raise ValueError(f"mel vocoder: inputs must hold one row of frames per wave, got {inputs.shape[0]} rows for {len(waves)} waves")
    gen = torch.Generator().manual_seed(int(seed))
    with torch.no_grad():
        mels = torch.cat([log_mel(waves[i:i + 256]) for i in range(0, len(waves), 256)])
        band_std = (mels.std((0, 2)) if band_std is None else torch.as_tensor(band_std, dtype=mels.dtype))[:, None]
    opt = torch.optim.AdamW(vocoder.parameters(), lr=lr, betas=(0.8, 0.99), weight_decay=0.0)
    t0, last, done, stopped_by_time = time.perf_counter(), math.nan, 0, False
    with torch.inference_mode(False), torch.enable_grad():
        vocoder.train()
        for step in range(int(steps)):
            elapsed = time.perf_counter() - t0
            frac = max(step / max(1, int(steps)), elapsed / (60.0 * minutes) if minutes else 0.0)
            if frac >= 1.0:
                stopped_by_time = step < int(steps)
                break
            for group in opt.param_groups:
                group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * frac))  # cosine decay over steps or time, whichever ends first
            idx = torch.randint(len(waves), (batch_size,), generator=gen)
            x, m = waves[idx], mels[idx]
            m_in = m
            if noise > 0:
                level = noise * torch.rand(batch_size, 1, 1, generator=gen)
                m_in = m + level * band_std * torch.randn(m.shape, generator=gen)
            if inputs is not None and share > 0:
                take = (torch.rand(batch_size, 1, 1, generator=gen) < share).to(m.dtype)
                m_in = take * inputs[idx] + (1 - take) * m_in
            with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
                x_hat = vocoder(m_in)
            x_hat = x_hat.float()
            loss = spectral_loss(x_hat, x) + (log_mel(x_hat) - m).abs().mean()
            if not torch.isfinite(loss):
                raise FloatingPointError(f"mel vocoder: the loss became {float(loss)} at step {step}; lower vocoder_lr (now {lr})")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(vocoder.parameters(), 1.0)
            opt.step()
            last, done = float(loss.detach()), step + 1
            if progress is not None:
                progress(done, last)
        vocoder.eval()
    return {"steps": done, "seconds": time.perf_counter() - t0, "final_loss": last, "stopped_by_time_budget": stopped_by_time,
            "n_train": len(waves), "parameters": sum(p.numel() for p in vocoder.parameters()), "noise": float(noise),
            **({"precision": precision} if requested != "fp32" else {}),  # what ran (auto: bf16 or fp32)
            **({"share": float(share), "lr": float(lr)} if inputs is not None else {})}


__all__ = ["IstftVocoder", "MelVocoder", "VOCODER_KINDS", "spectral_loss", "train_vocoder", "upsampling_strides"]
