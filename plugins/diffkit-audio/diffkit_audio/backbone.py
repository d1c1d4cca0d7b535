"""DiffWave (Kong et al. 2021): a non-causal WaveNet-style denoiser for raw waveforms.

Layout, for an input ``x`` of ``C×T`` samples::

    h_0 = ReLU(W_in x)                                              (1×1 conv, C -> R channels)
    e   = MLP(timestep_embedding(t)) [+ ClassEmbedding(cond)]        (diffusion-step / class embedding)
    for layer i = 0..L-1, dilation d_i = 2^(i mod cycle):
        y       = DilatedConv_{k=3, d_i}(h_i + W_e,i e) [+ W_m,i upsample(mel)]   (R -> 2R channels)
        z       = tanh(y_a) * sigmoid(y_b)                           (gated activation, y = [y_a; y_b])
        r, s    = split(W_o,i z)                                      (1×1 conv, R -> 2R)
        h_{i+1} = (h_i + r) / sqrt(2);   skip += s
    out = W_out ReLU(W_skip (skip / sqrt(L)))                        (W_out starts at zero)

Receptive field: ``1 + (k - 1) * sum_i d_i`` samples (``DiffWave.receptive_field``).

Patches (``patch = P > 1``, off by default): the waveform is folded P samples at a time into channels
(``C×T -> CP×T/P``, space-to-depth) before ``W_in`` and unfolded after ``W_out``, so the residual stack
runs at ``T/P`` positions and its receptive field counts in patches: P times longer for the same layers,
at about the cost of P times more residual channels. This is how the CPU tier of spoken-digits affords
a stack that hears the whole word. With ``patch_kernel = K > P`` the fold and unfold overlap: the input
is read by a convolution of K samples at stride P and the output written by a transposed convolution of
K samples at stride P (both padded by ``(K - P) / 2``), so neighbouring patches share samples instead of
meeting at hard boundaries every P samples.

Mel conditioning (a vocoder): built with ``n_mels > 0`` the model reads ``state["mel"]`` (B×n_mels×F
log-mel frames, ``F = T / hop``, as computed by :func:`mel_spectrogram`), upsamples it to the sample
rate with transposed 2-D convolutions whose strides multiply to ``hop``, and adds a 1×1 projection of it
inside every residual layer. Class conditioning: ``cond`` (B) labels, ``-1`` the null label.
"""
from __future__ import annotations

import functools
import math

import torch
from torch import nn
from torch.nn import functional as F

from diffkit.backbones import ClassEmbedding, timestep_embedding


def mel_spectrogram(wave: torch.Tensor, sample_rate: int, n_mels: int = 40, hop: int = 64, n_fft: int | None = None) -> torch.Tensor:
    """Log-mel frames ``log(max(M |STFT(x)|^2, 1e-5))`` of a mono ``B×1×T`` (or ``B×T``) batch: ``B×n_mels×(T/hop)``
    (torchaudio MelSpectrogram, Hann window ``n_fft = 4 hop``, centred frames; the last frame is dropped
    so that frames × hop = T)."""
    x = wave[:, 0] if wave.dim() == 3 else wave
    mel = _mel_transform(int(sample_rate), int(n_mels), int(hop), int(n_fft or 4 * hop), str(x.device))(x.float())
    return torch.log(mel.clamp(min=1e-5))[..., : x.shape[-1] // hop]


@functools.lru_cache(maxsize=16)
def _mel_transform(sample_rate: int, n_mels: int, hop: int, n_fft: int, device: str):
    """One torchaudio MelSpectrogram (its window and filterbank) per setting and device, built once: the
    vocoder's training loop calls :func:`mel_spectrogram` every step. It holds no parameters, only buffers."""
    import torchaudio

    return torchaudio.transforms.MelSpectrogram(sample_rate, n_fft=n_fft, hop_length=hop, n_mels=n_mels, power=2.0).to(device)


def _factors(hop: int) -> list[int]:
    """Split ``hop`` into upsampling strides of at most 16 (largest first)."""
    out, rest = [], int(hop)
    while rest > 1:
        f = next(d for d in range(min(16, rest), 0, -1) if rest % d == 0)
        if f == 1:
            raise ValueError(f"diffwave: mel hop {hop} has a prime factor above 16; use a hop such as 64, 128 or 256")
        out.append(f)
        rest //= f
    return out


class MelUpsampler(nn.Module):
    """Transposed 2-D convolutions over (mel bin, frame) with time strides multiplying to ``hop``."""

    def __init__(self, hop: int):
        super().__init__()
        self.hop = int(hop)
        self.layers = nn.ModuleList(nn.ConvTranspose2d(1, 1, (3, 2 * f), stride=(1, f), padding=(1, f // 2)) for f in _factors(hop))

    def forward(self, mel: torch.Tensor, length: int) -> torch.Tensor:
        x = mel.unsqueeze(1)
        for layer in self.layers:
            x = F.leaky_relu(layer(x), 0.4)
        x = x.squeeze(1)
        if x.shape[-1] >= length:
            return x[..., :length]
        return F.pad(x, (0, length - x.shape[-1]))


class ResidualLayer(nn.Module):
    def __init__(self, channels: int, dilation: int, embed_dim: int, n_mels: int):
        super().__init__()
        self.dilated = nn.Conv1d(channels, 2 * channels, 3, padding=dilation, dilation=dilation)
        self.step = nn.Linear(embed_dim, channels)
        self.mel = nn.Conv1d(n_mels, 2 * channels, 1) if n_mels else None
        self.out = nn.Conv1d(channels, 2 * channels, 1)

    def forward(self, h, emb, mel=None):
        y = self.dilated(h + self.step(emb)[:, :, None])
        if self.mel is not None:
            y = y + self.mel(mel)
        a, b = y.chunk(2, dim=1)
        r, s = self.out(torch.tanh(a) * torch.sigmoid(b)).chunk(2, dim=1)
        return (h + r) / math.sqrt(2.0), s


class DiffWave(nn.Module):
    """The DiffWave denoiser on one waveform field (see the module docstring for the equations)."""

    def __init__(self, field: str = "wave", channels: int = 1, residual_channels: int = 64, layers: int = 20, cycle: int = 10,
                 num_classes: int = 0, n_mels: int = 0, hop: int = 64, time_dim: int = 128, embed_dim: int = 512, patch: int = 1,
                 patch_kernel: int | None = None):
        super().__init__()
        if layers < 1 or cycle < 1 or residual_channels < 1 or patch < 1:
            raise ValueError(f"diffwave: layers, cycle, residual_channels and patch must be positive, got {layers}, {cycle}, {residual_channels}, {patch}")
        if n_mels and hop % patch:
            raise ValueError(f"diffwave: the mel hop ({hop}) must be a multiple of patch ({patch}); use a patch that divides it")
        kernel = int(patch if patch_kernel is None else patch_kernel)
        if kernel < patch or (kernel - patch) % 2:
            raise ValueError(f"diffwave: patch_kernel ({kernel}) must be at least patch ({patch}) and differ from it by an even number, e.g. {2 * patch}")
        self.field, self.time_dim, self.n_mels, self.hop, self.patch = field, int(time_dim), int(n_mels), int(hop), int(patch)
        self.patch_kernel = kernel
        self.dilations = [2 ** (i % cycle) for i in range(layers)]
        if kernel == self.patch:  # space-to-depth, then a 1×1 convolution (the same map as a stride-P convolution of P samples)
            self.inp = nn.Conv1d(channels * self.patch, residual_channels, 1)
        else:
            self.inp = nn.Conv1d(channels, residual_channels, kernel, stride=self.patch, padding=(kernel - self.patch) // 2)
        self.time = nn.Sequential(nn.Linear(time_dim, embed_dim), nn.SiLU(), nn.Linear(embed_dim, embed_dim), nn.SiLU())
        self.classes = ClassEmbedding(num_classes, embed_dim) if num_classes else None
        self.upsampler = MelUpsampler(hop // self.patch) if n_mels else None
        self.layers = nn.ModuleList(ResidualLayer(residual_channels, d, embed_dim, n_mels) for d in self.dilations)
        self.skip = nn.Conv1d(residual_channels, residual_channels, 1)
        if kernel == self.patch:
            self.final = nn.Conv1d(residual_channels, channels * self.patch, 1)
        else:
            self.final = nn.ConvTranspose1d(residual_channels, channels, kernel, stride=self.patch, padding=(kernel - self.patch) // 2)
        nn.init.zeros_(self.final.weight)
        nn.init.zeros_(self.final.bias)

    @property
    def receptive_field(self) -> int:
        """Samples of input that one output sample sees: ``(1 + 2 * sum(dilations)) * patch`` (kernel 3) with
        plain patches; overlapping ones (``patch_kernel = K``) add ``2 (K - P)``: ``K - P`` on reading, ``K - P``
        on writing."""
        return (1 + 2 * sum(self.dilations)) * self.patch + 2 * (self.patch_kernel - self.patch)

    def forward(self, state, t: torch.Tensor, cond: torch.Tensor | None = None) -> dict:
        x = state[self.field]
        B, C, T = x.shape
        P = self.patch
        if T % P:
            raise ValueError(f"diffwave: clip length {T} is not a multiple of patch {P}; choose a patch that divides it")
        emb = self.time(timestep_embedding(t.to(x.device), self.time_dim).to(x.dtype))
        if self.classes is not None:
            emb = emb + self.classes(cond, B, x.device)
        mel = None
        if self.upsampler is not None:
            if "mel" not in state:
                raise KeyError(f"diffwave was built with mel conditioning (n_mels={self.n_mels}) but the state has no 'mel' field; "
                               f"pass state['mel'] = diffkit_audio.mel_spectrogram(wave, rate, n_mels={self.n_mels}, hop={self.hop})")
            m = state["mel"].to(x.dtype)
            if m.dim() != 3 or m.shape[1] != self.n_mels:
                raise ValueError(f"diffwave: state['mel'] must be B×{self.n_mels}×frames, got {tuple(m.shape)}")
            mel = self.upsampler(m, T // P)
        folded = P > 1 and self.patch_kernel == P
        if folded:  # space-to-depth: channel c*P + j of position n holds sample n*P + j of channel c
            x = x.reshape(B, C, T // P, P).transpose(2, 3).reshape(B, C * P, T // P)
        h = F.relu(self.inp(x))
        skip = torch.zeros_like(h)
        for layer in self.layers:
            h, s = layer(h, emb, mel)
            skip = skip + s
        out = self.final(F.relu(self.skip(skip / math.sqrt(len(self.layers)))))
        if folded:
            out = out.reshape(B, C, P, T // P).transpose(2, 3).reshape(B, C, T)
        return {self.field: out}


def build_diffwave(space, diffusion, *, num_classes: int = 0, residual_channels: int = 64, layers: int = 20, cycle: int = 10,
                   n_mels: int | None = None, hop: int | None = None, time_dim: int = 128, embed_dim: int = 512, patch: int = 1,
                   patch_kernel: int | None = None) -> DiffWave:
    """Registered backbone ``diffwave`` for spaces with one continuous ``C×T`` field (``audio``, ``audio-sequence``).

    Options: ``residual_channels`` (R), ``layers`` (L), ``cycle`` (dilations ``2^(i mod cycle)``),
    ``n_mels``/``hop`` (mel conditioning from ``state["mel"]``; 0 = off; by default those of the space's
    ``mel`` conditioning field, so a vocoder recipe sets them once, in ``[data] space``), ``time_dim``, ``embed_dim``,
    ``patch`` (fold P samples into channels) and ``patch_kernel`` (K > P: overlapping fold and unfold)."""
    fields = [f for f in space.fields if f.kind == "continuous" and f.diffused]
    if len(fields) != 1:
        raise ValueError(f"diffwave models one continuous waveform field; space {space.name!r} has {[f.name for f in space.fields]}; use an audio space")
    has_mel = any(f.name == "mel" and not f.diffused for f in space.fields)
    space_mels, space_hop = (int(getattr(space, "n_mels", 0)), int(getattr(space, "hop", 64))) if has_mel else (0, 64)
    n_mels = space_mels if n_mels is None else int(n_mels)
    hop = space_hop if hop is None else int(hop)
    if n_mels and (n_mels, hop) != (space_mels, space_hop):
        raise ValueError(f"diffwave n_mels={n_mels}, hop={hop} but space {space.name!r} computes "
                         + (f"mel frames with n_mels={space_mels}, hop={space_hop}" if has_mel else "no mel frames")
                         + f"; set [data] space = {{ n_mels = {n_mels}, hop = {hop} }} and drop n_mels/hop from the model options")
    shape = space.template(1)[fields[0].name].shape
    if len(shape) != 3:
        raise ValueError(f"diffwave needs a field of shape (channels, samples); space {space.name!r} gives {tuple(shape[1:])}")
    return DiffWave(fields[0].name, int(shape[1]), int(residual_channels), int(layers), int(cycle), int(num_classes), int(n_mels), int(hop), int(time_dim), int(embed_dim), int(patch),
                    None if patch_kernel is None else int(patch_kernel))
