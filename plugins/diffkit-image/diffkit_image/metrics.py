"""Digits metrics in the features of the plugin's digits classifiers (:mod:`diffkit_image.classifier`).

Both read images through a cached CNN, the judge: the 28×28 MNIST one for 28×28 images, else the 8×8 one
(images area-averaged to 8×8). Option ``judge = "digits" | "mnist"`` forces one.
"""
from __future__ import annotations

import numpy as np
import torch

from diffkit.metrics import feature_statistics, frechet_distance

from diffkit_image.classifier import classify, digits_classifier


def _elements(items) -> list:
    from diffkit.evaluation import split_items

    if items is None:
        return []
    if isinstance(getattr(items, "images", None), torch.Tensor):  # an ImageDataset: its stacked images
        return items.images
    if isinstance(items, (list, tuple)) and not any(isinstance(i, tuple) for i in items):
        return list(items)
    elements, _ = split_items(items)
    return elements


def _fd(a: np.ndarray, b: np.ndarray) -> float:
    return max(0.0, frechet_distance(*feature_statistics(a), *feature_statistics(b)))


def digits_frechet(ctx, judge: str = "auto", **options) -> dict:
    """Frechet distance ``||mu_g - mu_r||^2 + tr(S_g + S_r - 2 (S_g S_r)^(1/2))`` between Gaussians fitted to
    the classifier's 64 penultimate features of the generated and the reference images (FID's formula
    with a digits CNN in place of Inception).

    Figures: ``digits_frechet_distance`` (generated vs reference) and, when the context holds the
    training set, ``digits_frechet_train_floor`` (as many real training images as generated ones, evenly
    spaced through the training set, vs the same reference: what a perfect generator would score at
    this sample size, since the estimate's bias grows as samples shrink) and ``digits_frechet_ratio``
    (distance / floor).
    """
    generated, reference = list(ctx.generated), list(ctx.reference)
    if len(generated) < 2 or len(reference) < 2:
        raise ValueError(f"digits-frechet needs at least 2 generated and 2 reference images, got {len(generated)} and {len(reference)}; sample more")
    f_gen, _ = classify(generated, judge=judge)
    f_ref, _ = classify(reference, judge=judge)
    f_gen, f_ref = f_gen.double().numpy(), f_ref.double().numpy()
    out = {"digits_frechet_distance": _fd(f_gen, f_ref)}
    train = _elements(getattr(ctx, "train", None))
    if train is not None and len(train) >= 2:
        # as many training images as generated ones (evenly spaced): the Frechet distance's bias grows as
        # the sample shrinks, so the floor must be measured at the generated sample's size
        m = min(len(train), len(generated))
        pick = np.unique(np.linspace(0, len(train) - 1, m).round().astype(int))
        f_train, _ = classify([train[int(i)] for i in pick], judge=judge)
        floor = _fd(f_train.double().numpy(), f_ref)
        out["digits_frechet_train_floor"] = floor
        out["digits_frechet_ratio"] = out["digits_frechet_distance"] / max(floor, 1e-12)
    return out


def digits_accuracy(ctx, judge: str = "auto", **options) -> dict:
    """Class accuracy ``mean_i [argmax_c p(c | x_i) = y_i]`` of class-conditional samples ``x_i`` drawn for labels
    ``y_i``, judged by the digits classifier; also ``digits_confidence`` (mean ``p(y_i | x_i)``) and, when
    the reference carries labels, ``digits_reference_accuracy`` (the classifier's accuracy on real
    reference images: the ceiling a perfect generator reaches)."""
    if ctx.labels is None:
        raise ValueError("digits-accuracy needs the class labels the samples were drawn for; sample a class-conditional run (num_classes = 10)")
    generated, labels = list(ctx.generated), np.asarray(list(ctx.labels), dtype=np.int64)
    if len(generated) != len(labels) or not len(labels):
        raise ValueError(f"digits-accuracy got {len(generated)} samples and {len(labels)} labels; pass one label per sample")
    if labels.min() < 0 or labels.max() > 9:
        raise ValueError(f"digits-accuracy: labels must be digits 0..9, got {labels.min()}..{labels.max()}")
    _, probs = classify(generated, judge=judge)
    probs = probs.double().numpy()
    out = {"digits_accuracy": float((probs.argmax(1) == labels).mean()), "digits_confidence": float(probs[np.arange(len(labels)), labels].mean())}
    if ctx.reference_labels is not None and len(ctx.reference):
        _, ref_probs = classify(list(ctx.reference), judge=judge)
        out["digits_reference_accuracy"] = float((ref_probs.numpy().argmax(1) == np.asarray(ctx.reference_labels)).mean())
    return out


def classifier_report() -> dict:
    """The cached classifier's accuracies on the digits train, val and test splits."""
    return dict(digits_classifier()[1])


__all__ = ["classifier_report", "digits_accuracy", "digits_frechet"]
