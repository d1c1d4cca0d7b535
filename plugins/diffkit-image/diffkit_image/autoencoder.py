"""A small convolutional autoencoder: the learned first stage for latent diffusion on images.

Registered representation ``autoencoder``: images ``C×H×W`` in [0, 1] become codes ``latent_channels×H/2^d×W/2^d``
(``d = downsample`` stride-2 stages; MNIST 1×28×28 -> 4×7×7 with the defaults). The diffusion runs on the codes
(:class:`diffkit.spaces.latent.LatentSpace`) and samples are decoded back to images.

Training (``fit``): the encoder ``E`` and decoder ``D`` minimise the binary cross-entropy of ``D(z + s ε)`` against
``x``, with ``z = E(2x - 1)``, plus ``latent_penalty · mean(z²)``; ``ε ~ N(0, I)`` and the noise scale ``s`` is
``latent_noise`` times the running standard deviation of ``z`` (a decoder that tolerates small errors in its codes
decodes generated codes, which are never exact, more cleanly). AdamW, ``steps`` steps of ``batch_size`` images,
every draw from ``torch.Generator().manual_seed(seed)``. Afterwards the per-channel mean ``m_c`` and standard
deviation ``s_c`` of the codes of the training images are kept, and ``encode(x) = (E(2x - 1) - m) / s``,
``decode(z) = round_L(sigmoid(D(s z + m)))`` (rounded to the space's grey levels), so the diffusion sees codes of
unit scale whatever the autoencoder learned.
"""
from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F
from torch import nn

from diffkit.representations import Representation, RepresentationError
from diffkit.spaces.latent import LatentSpace

from diffkit_image.space import ImageSpace


def _encoder(channels: int, width: int, latent: int, downsample: int) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(channels, width, 3, padding=1), nn.SiLU()]
    c = width
    for _ in range(downsample):
        layers += [nn.Conv2d(c, 2 * width, 4, stride=2, padding=1), nn.SiLU(), nn.Conv2d(2 * width, 2 * width, 3, padding=1), nn.SiLU()]
        c = 2 * width
    return nn.Sequential(*layers, nn.Conv2d(c, latent, 1))


def _decoder(channels: int, width: int, latent: int, downsample: int) -> nn.Sequential:
    c = 2 * width if downsample else width
    layers: list[nn.Module] = [nn.Conv2d(latent, c, 3, padding=1), nn.SiLU()]
    for i in range(downsample):
        out = 2 * width if i < downsample - 1 else width
        layers += [nn.Conv2d(c, c, 3, padding=1), nn.SiLU(), nn.ConvTranspose2d(c, out, 4, stride=2, padding=1), nn.SiLU()]
        c = out
    return nn.Sequential(*layers, nn.Conv2d(c, channels, 3, padding=1))


class ImageAutoencoder(Representation):
    """See the module docstring. Options: ``latent_channels``, ``downsample``, ``width`` (channels of the first
    convolution; doubled after each downsampling), ``steps``, ``batch_size``, ``lr``, ``latent_noise``,
    ``latent_penalty``, ``seed``."""

    name = "autoencoder"
    learned = True
    version = 1

    def __init__(self, space: ImageSpace, latent_channels: int = 4, downsample: int = 2, width: int = 16, steps: int = 1500, batch_size: int = 64,
                 lr: float = 2e-3, latent_noise: float = 0.1, latent_penalty: float = 1e-4, seed: int = 0):
        if not isinstance(space, ImageSpace):
            raise RepresentationError(f"representation 'autoencoder' encodes images (the image space), not {getattr(space, 'name', space)!r}")
        C, H, W = space.shape
        if H % (2 ** downsample) or W % (2 ** downsample):
            raise RepresentationError(f"representation 'autoencoder': {H}×{W} images do not halve {downsample} times; choose downsample so that 2^downsample divides {H} and {W}")
        self.data_space = space
        self.options = {"latent_channels": int(latent_channels), "downsample": int(downsample), "width": int(width), "steps": int(steps), "batch_size": int(batch_size),
                        "lr": float(lr), "latent_noise": float(latent_noise), "latent_penalty": float(latent_penalty), "seed": int(seed)}
        self.space = LatentSpace((int(latent_channels), H // 2 ** downsample, W // 2 ** downsample))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            self.encoder = _encoder(C, int(width), int(latent_channels), int(downsample)).eval()
            self.decoder = _decoder(C, int(width), int(latent_channels), int(downsample)).eval()
        self.mean = torch.zeros(int(latent_channels))
        self.std = torch.ones(int(latent_channels))

    # --- the maps --------------------------------------------------------------------------------------
    def _images(self, elements) -> torch.Tensor:
        if isinstance(elements, torch.Tensor):
            return elements.float()
        return torch.stack([self.data_space.validate(e) for e in elements])

    @torch.no_grad()
    def encode(self, elements) -> list:
        z = self.encoder(2.0 * self._images(elements) - 1.0)
        return list((z - self.mean[:, None, None]) / self.std[:, None, None])

    @torch.no_grad()
    def decode(self, codes) -> list:
        z = torch.stack([self.space.validate(c) for c in codes]) * self.std[:, None, None] + self.mean[:, None, None]
        x = torch.sigmoid(self.decoder(z))
        levels = self.data_space.levels
        if levels is not None:
            x = torch.round(x * (levels - 1)) / (levels - 1)
        return list(x)

    # --- fitting ---------------------------------------------------------------------------------------
    def fit(self, elements, labels=None) -> dict:
        o = self.options
        x_all = self._images(elements)
        gen = torch.Generator().manual_seed(o["seed"])
        params = list(self.encoder.parameters()) + list(self.decoder.parameters())
        opt = torch.optim.AdamW(params, lr=o["lr"], weight_decay=0.0)
        running_std, t0, last = 1.0, time.perf_counter(), math.nan
        with torch.inference_mode(False), torch.enable_grad():
            self.encoder.train(), self.decoder.train()
            for step in range(o["steps"]):
                lr = o["lr"] * 0.5 * (1 + math.cos(math.pi * step / max(1, o["steps"])))  # cosine decay to zero
                for group in opt.param_groups:
                    group["lr"] = lr
                x = x_all[torch.randint(len(x_all), (o["batch_size"],), generator=gen)]
                z = self.encoder(2.0 * x - 1.0)
                running_std = 0.98 * running_std + 0.02 * float(z.detach().std())
                noisy = z + o["latent_noise"] * running_std * torch.randn(z.shape, generator=gen)
                loss = F.binary_cross_entropy_with_logits(self.decoder(noisy), x) + o["latent_penalty"] * z.pow(2).mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                opt.step()
                last = float(loss.detach())
            self.encoder.eval(), self.decoder.eval()
        with torch.no_grad():
            z = torch.cat([self.encoder(2.0 * x_all[i:i + 512] - 1.0) for i in range(0, len(x_all), 512)])
            self.mean, self.std = z.mean((0, 2, 3)), z.std((0, 2, 3)).clamp_min(1e-6)
            recon = torch.cat([torch.stack(self.decode(self.encode(x_all[i:i + 512]))) for i in range(0, len(x_all), 512)])
        return {"steps": o["steps"], "seconds": time.perf_counter() - t0, "final_loss": last, "train_mse": float((recon - x_all).pow(2).mean()),
                "train_max_abs_error": float((recon - x_all).abs().amax((1, 2, 3)).mean()), "n_train": len(x_all)}

    # --- description and weights ----------------------------------------------------------------------
    def config(self) -> dict:
        return dict(self.options)

    def state_dict(self) -> dict:
        tensors = {f"encoder.{k}": v for k, v in self.encoder.state_dict().items()}
        tensors.update({f"decoder.{k}": v for k, v in self.decoder.state_dict().items()})
        return {**tensors, "latent.mean": self.mean, "latent.std": self.std}

    def load_state_dict(self, tensors) -> None:
        enc = {k[len("encoder."):]: v for k, v in tensors.items() if k.startswith("encoder.")}
        dec = {k[len("decoder."):]: v for k, v in tensors.items() if k.startswith("decoder.")}
        try:
            self.encoder.load_state_dict(enc)
            self.decoder.load_state_dict(dec)
            self.mean, self.std = tensors["latent.mean"].float(), tensors["latent.std"].float()
        except (RuntimeError, KeyError) as exc:
            raise RepresentationError(f"representation 'autoencoder': weights do not fit its options {self.options} ({str(exc).splitlines()[0]}); "
                                      f"they belong to another configuration") from None


def autoencoder(space, **options) -> ImageAutoencoder:
    """Registered representation ``autoencoder`` (see :class:`ImageAutoencoder`)."""
    return ImageAutoencoder(space, **options)


__all__ = ["ImageAutoencoder", "autoencoder"]
