"""The log-mel first stage: diffusion on mel frames, decoded to waveforms by Griffin-Lim or a DiffWave vocoder.

Registered representation ``log-mel``. A mono clip of ``T`` samples becomes the frames
``m = log(max(M |STFT(x)|^2, 1e-5))`` of :func:`diffkit_audio.backbone.mel_spectrogram` (``n_mels`` bands, hop
``hop``, Hann window ``4 hop``; ``T / hop`` frames: the same frames the audio space hands a mel-conditioned
DiffWave), standardised per band, ``z = (m - mu_b) / s_b`` with the training clips' band means and standard
deviations, and laid out in a :class:`~diffkit.spaces.latent.LatentSpace` as ``layout`` says: ``"image"``, a
one-channel image ``1×n_mels×(T/hop)`` for the image UNet, or ``"sequence"``, ``n_mels×(T/hop)`` (bands as
channels, frames as time) for a 1-D backbone such as ``diffwave`` (the layout of DiffSinger's denoiser, and far
cheaper on a CPU: no convolution runs over the 40 bands' axis).

Decoding undoes the standardisation and turns frames into a wave with the ``vocoder`` option:

- ``"griffin-lim"`` (the baseline): the power spectrogram ``P`` solving ``M P = exp(m)`` in least squares
  (non-negative, torchaudio ``InverseMelScale``), then ``n_iter`` Griffin-Lim phase iterations (momentum 0.99,
  torchaudio ``GriffinLim``), the last frame repeated once so that the wave has ``T`` samples;
- ``"learned"``: a one-pass vocoder that ``fit`` trains on the training clips beside the standardisation
  (``learned_channels`` wide, ``learned_steps`` steps of batch ``learned_batch``, stopped early after
  ``learned_minutes``; see :mod:`diffkit_audio.vocoder`), so both stages train in one run and the fitted vocoder is
  cached with the first stage. ``learned_kind`` chooses the network: ``"upsample"`` (the default, a
  :class:`~diffkit_audio.vocoder.MelVocoder` running at the sample rate) or ``"istft"`` (an
  :class:`~diffkit_audio.vocoder.IstftVocoder` of ``learned_layers`` blocks at the frame rate, ending in an inverse STFT);
- a run directory of a mel-conditioned ``diffwave`` (e.g. trained from ``spoken-digits-vocoder-smoke``): the
  vocoder's sampler (``vocoder_sampler``, ``vocoder_steps``) draws the wave for each clip's frames. Its space must
  have the same ``n_mels``, ``hop``, sample rate and length, which is checked when it is loaded.
"""
from __future__ import annotations

import math

import torch

from diffkit.representations import Representation, RepresentationError
from diffkit.spaces.latent import LatentSpace
from diffkit.state import State

from diffkit_audio.backbone import mel_spectrogram
from diffkit_audio.space import AudioSpace


class LogMel(Representation):
    """See the module docstring. Options: ``n_mels``, ``hop``, ``layout``, ``vocoder`` (``"griffin-lim"`` or a run directory),
    ``n_iter`` (Griffin-Lim iterations), ``vocoder_sampler``, ``vocoder_steps`` (a DiffWave vocoder's sampling),
    ``learned_channels``, ``learned_steps``, ``learned_minutes``, ``learned_batch``, ``learned_lr``, ``learned_noise`` (the learned vocoder;
    ``learned_noise``: its conditioning augmentation, the largest noise level added to its input frames in units of each band's
    deviation, see diffkit_audio.vocoder; 0 trains on clean frames), ``learned_kind`` (``"upsample"`` or ``"istft"``),
    ``learned_layers`` (the ``"istft"`` network's blocks) and ``learned_precision`` (``"fp32"``, ``"bf16"``: the fit's and
    the tune's forward passes under bfloat16 autocast, diffkit_audio.vocoder.train_vocoder, or ``"auto"``: bf16 where the CPU
    has bfloat16 units, diffkit.cpu; decoding is float32 either way)."""

    name = "log-mel"
    learned = True  # the per-band standardisation is fitted (a mean and a deviation per band)
    version = 2  # 2: the learned vocoder

    def __init__(self, space: AudioSpace, n_mels: int = 40, hop: int = 64, layout: str = "image", vocoder: str = "griffin-lim", n_iter: int = 64,
                 vocoder_sampler: str = "dpmpp-2m", vocoder_steps: int = 10, learned_channels: int = 128, learned_steps: int = 4000,
                 learned_minutes: float | None = None, learned_batch: int = 16, learned_lr: float = 2e-3, learned_noise: float = 0.0,
                 learned_kind: str = "upsample", learned_layers: int = 8, learned_precision: str = "fp32"):
        if not isinstance(space, AudioSpace) or space.channels != 1:
            raise RepresentationError(f"representation 'log-mel' encodes mono clips of the audio space, not {getattr(space, 'name', space)!r} "
                                      f"with {getattr(space, 'channels', '?')} channel(s)")
        if space.length % int(hop):
            raise RepresentationError(f"representation 'log-mel': clips of {space.length} samples are not a whole number of hops of {hop}; choose hop dividing {space.length}")
        if layout not in ("image", "sequence"):
            raise RepresentationError(f"representation 'log-mel': layout must be 'image' (1×bands×frames, for a UNet) or 'sequence' (bands×frames, for a 1-D backbone), got {layout!r}")
        self.data_space = space
        self.options = {"n_mels": int(n_mels), "hop": int(hop), "layout": layout, "vocoder": str(vocoder), "n_iter": int(n_iter),
                        "vocoder_sampler": str(vocoder_sampler), "vocoder_steps": int(vocoder_steps)}
        self.learned_vocoder = None
        if self.options["vocoder"] == "learned":
            from diffkit.cpu import check_precision

            from diffkit_audio.vocoder import VOCODER_KINDS, IstftVocoder, MelVocoder

            self.options.update(learned_channels=int(learned_channels), learned_steps=int(learned_steps), learned_batch=int(learned_batch),
                                learned_lr=float(learned_lr), learned_minutes=None if learned_minutes is None else float(learned_minutes))
            noise = float(learned_noise)
            if noise:  # written only when set, so the configs of runs trained before the option stay as they were
                if not (noise > 0 and math.isfinite(noise)):
                    raise RepresentationError(f"representation 'log-mel': learned_noise must be a finite number >= 0, got {learned_noise!r}")
                self.options["learned_noise"] = noise
            try:
                check_precision(learned_precision)
            except ValueError as err:
                raise RepresentationError(f"representation 'log-mel': learned_{err}") from None
            if learned_precision != "fp32":  # written only when set, as learned_noise
                self.options["learned_precision"] = learned_precision
            if learned_kind == "upsample":
                self.learned_vocoder = MelVocoder(int(n_mels), int(hop), self.options["learned_channels"]).eval()
            elif learned_kind == "istft":  # kind and depth written only for this kind: the configs of upsampling runs stay as they were
                self.options.update(learned_kind="istft", learned_layers=int(learned_layers))
                self.learned_vocoder = IstftVocoder(int(n_mels), int(hop), self.options["learned_channels"], int(learned_layers)).eval()
            else:
                raise RepresentationError(f"representation 'log-mel': learned_kind must be one of {', '.join(VOCODER_KINDS)}, got {learned_kind!r}")
        self.frames = space.length // int(hop)
        self.space = LatentSpace((1, int(n_mels), self.frames) if layout == "image" else (int(n_mels), self.frames))
        self.mean = torch.zeros(int(n_mels))
        self.std = torch.ones(int(n_mels))
        self._vocoder = None

    def log_mel(self, waves: torch.Tensor) -> torch.Tensor:
        """``B×n_mels×frames`` log-mel frames of ``B×1×T`` waves."""
        return mel_spectrogram(waves, self.data_space.sample_rate, self.options["n_mels"], self.options["hop"])

    def _waves(self, elements) -> torch.Tensor:
        return torch.stack([self.data_space.validate(e) for e in elements])

    def fit(self, elements, labels=None) -> dict:
        report = self.fit_codes(elements, labels)
        if self.learned_vocoder is not None:
            report.update(self.fit_decoder(elements, labels))
        return report

    @property
    def decoder_fits_apart(self) -> bool:
        """The codes need only the band statistics; a learned vocoder can be fitted beside the diffusion (``fit = "beside"``)."""
        return self.learned_vocoder is not None

    def fit_codes(self, elements, labels=None) -> dict:
        """The per-band mean and deviation of the training clips' log-mel frames, which ``encode`` standardises with."""
        m = self.log_mel(self._waves(elements))
        self.mean, self.std = m.mean((0, 2)), m.std((0, 2)).clamp_min(1e-3)
        return {"n_train": len(elements), "log_mel_range": [float(m.min()), float(m.max())]}

    def fit_decoder(self, elements, labels=None) -> dict:
        """Train the learned vocoder on the training clips (after :meth:`fit_codes`: its noise is in band deviations)."""
        from diffkit.progress import progress_bar

        from diffkit_audio.vocoder import train_vocoder

        if self.learned_vocoder is None:
            raise RepresentationError("representation 'log-mel' has no learned vocoder to fit; set vocoder = \"learned\"")
        o = self.options
        with progress_bar(o["learned_steps"], "mel vocoder") as bar:
            return {"vocoder": train_vocoder(self.learned_vocoder, self._waves(elements), self.log_mel, steps=o["learned_steps"],
                                             minutes=o["learned_minutes"], batch_size=o["learned_batch"], lr=o["learned_lr"],
                                             seed=torch.initial_seed(), noise=o.get("learned_noise", 0.0), band_std=self.std,
                                             precision=o.get("learned_precision", "fp32"),
                                             progress=lambda step, loss: (bar.update(1), bar.set_postfix(loss=f"{loss:.3f}", refresh=False)))}

    @property
    def decoder_tunes_on_codes(self) -> bool:
        """A learned vocoder can go on training on the diffusion's own frames (``diffkit tune-first-stage``)."""
        return self.learned_vocoder is not None

    def tune_decoder(self, elements, codes, labels=None, *, minutes: float, share: float = 0.8, seed: int = 0) -> dict:
        """Go on training the learned vocoder for ``minutes``: with probability ``share`` a batch item is voiced from the
        diffusion's reconstruction of its frames (``codes``, see diffkit.runs.diffusion_reconstructions), otherwise from
        its own frames with the fit's augmentation; the target is always the real clip. The rate is a quarter of
        ``learned_lr`` (it starts from a fitted vocoder), decayed to zero over the minutes; the band statistics, and
        so ``encode``, are left as they are."""
        from diffkit.progress import progress_bar

        from diffkit_audio.vocoder import train_vocoder

        if self.learned_vocoder is None:
            raise RepresentationError("representation 'log-mel' has no learned vocoder to tune; set vocoder = \"learned\"")
        if len(codes) != len(elements):
            raise RepresentationError(f"representation 'log-mel': tune_decoder needs one code per clip, got {len(codes)} codes for {len(elements)} clips")
        o = self.options
        frames = self.frames_of(codes)
        steps = 10**9  # stopped by the minutes
        with progress_bar(None, "tune mel vocoder") as bar:
            return {"vocoder_tune": train_vocoder(self.learned_vocoder, self._waves(elements), self.log_mel, steps=steps, minutes=float(minutes),
                                                  batch_size=o["learned_batch"], lr=o["learned_lr"] / 4, seed=int(seed), noise=o.get("learned_noise", 0.0),
                                                  band_std=self.std, inputs=frames, share=float(share), precision=o.get("learned_precision", "fp32"),
                                                  progress=lambda step, loss: (bar.update(1), bar.set_postfix(loss=f"{loss:.3f}", refresh=False)))}

    @torch.no_grad()
    def encode(self, elements) -> list:
        m = self.log_mel(self._waves(elements))
        z = (m - self.mean[:, None]) / self.std[:, None]
        return list(z[:, None] if self.options["layout"] == "image" else z)

    def frames_of(self, codes) -> torch.Tensor:
        """Log-mel frames ``B×n_mels×frames`` of codes (the standardisation undone)."""
        z = torch.stack([self.space.validate(c) for c in codes])
        z = z[:, 0] if self.options["layout"] == "image" else z
        return z * self.std[:, None] + self.mean[:, None]

    @torch.no_grad()
    def decode(self, codes) -> list:
        mel = self.frames_of(codes)
        if self.options["vocoder"] == "griffin-lim":
            waves = self.griffin_lim(mel)
        elif self.learned_vocoder is not None:
            waves = self.learned_vocoder(mel)
        else:
            waves = self.vocode(mel)
        return [self.data_space.validate(w.clamp(-1, 1)) for w in waves]

    # --- the decoders -------------------------------------------------------------------------------------
    def griffin_lim(self, mel: torch.Tensor) -> torch.Tensor:
        import torchaudio

        hop, n_mels = self.options["hop"], self.options["n_mels"]
        n_fft = 4 * hop
        power_mel = torch.exp(torch.cat([mel, mel[..., -1:]], -1))  # the dropped last frame: repeated, so the wave is frames × hop long
        inverse = torchaudio.transforms.InverseMelScale(n_stft=n_fft // 2 + 1, n_mels=n_mels, sample_rate=self.data_space.sample_rate)
        power = inverse(power_mel).clamp_min(0.0)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)  # Griffin-Lim starts from random phases: fixed, so decoding is deterministic
            gl = torchaudio.transforms.GriffinLim(n_fft=n_fft, hop_length=hop, power=2.0, n_iter=self.options["n_iter"], momentum=0.99, rand_init=True)
            wave = gl(power)
        return _fit_length(wave, self.data_space.length)[:, None]

    def vocode(self, mel: torch.Tensor) -> torch.Tensor:
        from diffkit.runs import generate

        run = self.vocoder_run()
        waves, _, _ = generate(run, mel.shape[0], sampler=self.options["vocoder_sampler"], steps=self.options["vocoder_steps"], seed=0,
                               conditioning=State(mel=mel), batch_size=64)
        return torch.stack(waves)

    def vocoder_run(self):
        """The mel-conditioned DiffWave run named by ``vocoder``, loaded once and checked against this representation."""
        if self._vocoder is None:
            from diffkit.runs import load_run

            run = load_run(self.options["vocoder"])
            space = run.space
            want = {"n_mels": self.options["n_mels"], "hop": self.options["hop"], "sample_rate": self.data_space.sample_rate, "length": self.data_space.length}
            got = {k: getattr(space, k, None) for k in want}
            if got != want:
                raise RepresentationError(f"vocoder run {self.options['vocoder']} has {got}, this log-mel representation needs {want}; "
                                          f"train the vocoder with [data] space = {{ n_mels = {want['n_mels']}, hop = {want['hop']} }} on the same clips")
            self._vocoder = run
        return self._vocoder

    # --- description and weights ----------------------------------------------------------------------
    def config(self) -> dict:
        return dict(self.options)

    def state_dict(self) -> dict:
        tensors = {"band.mean": self.mean, "band.std": self.std}
        if self.learned_vocoder is not None:
            tensors.update({f"vocoder.{k}": v for k, v in self.learned_vocoder.state_dict().items()})
        return tensors

    def load_state_dict(self, tensors) -> None:
        band = {k: v for k, v in tensors.items() if k.startswith("band.")}
        vocoder = {k[len("vocoder."):]: v for k, v in tensors.items() if k.startswith("vocoder.")}
        fits = set(band) == {"band.mean", "band.std"} and band["band.mean"].shape == (self.options["n_mels"],) and len(band) + len(vocoder) == len(tensors)
        if fits and self.learned_vocoder is not None:
            try:
                self.learned_vocoder.load_state_dict(vocoder)
            except RuntimeError:
                fits = False
        elif vocoder:
            fits = False
        if not fits:
            raise RepresentationError(f"representation 'log-mel': weights {sorted(tensors)[:4]}... do not fit its options {self.options}; "
                                      f"they belong to another configuration")
        self.mean, self.std = tensors["band.mean"].float(), tensors["band.std"].float()


def _fit_length(wave: torch.Tensor, length: int) -> torch.Tensor:
    if wave.shape[-1] >= length:
        return wave[..., :length]
    return torch.nn.functional.pad(wave, (0, length - wave.shape[-1]))


def log_mel(space, **options) -> LogMel:
    """Registered representation ``log-mel`` (see :class:`LogMel`)."""
    return LogMel(space, **options)


def spectral_convergence(a: torch.Tensor, b: torch.Tensor, n_fft: int = 256) -> float:
    """``|| |S(a)| - |S(b)| ||_F / || |S(a)| ||_F`` of two waves' magnitude STFTs (Hann ``n_fft``, hop ``n_fft/4``):
    the round-trip error the log-mel first stage states (phase is not compared, so Griffin-Lim is judged fairly)."""
    window = torch.hann_window(n_fft)
    sa = torch.stft(torch.as_tensor(a).reshape(-1).float(), n_fft, n_fft // 4, window=window, return_complex=True).abs()
    sb = torch.stft(torch.as_tensor(b).reshape(-1).float(), n_fft, n_fft // 4, window=window, return_complex=True).abs()
    return float(torch.linalg.norm(sa - sb) / max(float(torch.linalg.norm(sa)), 1e-12))


__all__ = ["LogMel", "log_mel", "spectral_convergence"]
