import copy

import pytest
import torch

from diffkit.evaluation import EvalContext
from diffkit.testing import check_metric
from diffkit_image import classifier as clf
from diffkit_image.metrics import classifier_report, digits_accuracy, digits_frechet


def images_and_labels(dataset):
    return list(dataset.images), dataset.labels.tolist()


def ctx_of(generated, labels, reference_set, train=None):
    ref, ref_labels = images_and_labels(reference_set)
    return EvalContext(generated=generated, reference=ref, labels=labels, reference_labels=ref_labels, train=train, space=reference_set.space)


# --- the classifier ---------------------------------------------------------------------------------------
def test_classifier_reaches_095_on_the_test_split(classifier, digits_splits):
    model, report = classifier
    assert report["test_accuracy"] >= 0.95 and report["val_accuracy"] >= 0.95
    test = digits_splits["test"]
    with torch.no_grad():
        pred = model(test.images).argmax(-1)
    assert float((pred == test.labels).float().mean()) == pytest.approx(report["test_accuracy"], abs=1e-6)  # the report holds a float32; one image is 1/359


def test_default_judges_are_shipped_not_trained(classifier, monkeypatch):
    """Both default judges load the weights in diffkit_image/judges, exactly, with no training, whatever the CPU."""
    from safetensors.torch import load_file

    monkeypatch.setattr(clf, "_MEMO", {})
    monkeypatch.setattr(clf, "train_classifier", lambda *a, **k: pytest.fail("a default judge must not be retrained"))
    for config in (clf.CONFIG, clf.MNIST_CONFIG):
        model, report = clf.digits_classifier(config)
        weights, meta = clf._paths(config, clf.SHIPPED_JUDGES)
        assert weights.exists() and meta.exists() and report["test_accuracy"] >= 0.95
        shipped = load_file(str(weights))
        assert all(torch.equal(v, shipped[k]) for k, v in model.state_dict().items())
    assert classifier[1] == clf.digits_classifier()[1] == classifier_report()


def test_another_configuration_is_trained_cached_as_safetensors_and_json_and_reloads_identically(image_cache, monkeypatch):
    monkeypatch.setattr(clf, "_MEMO", {})
    cfg = {**copy.deepcopy(clf.CONFIG), "epochs": 1}
    model, report = clf.digits_classifier(cfg)
    folder = image_cache / "diffkit-image"
    key = clf.config_key(cfg)
    assert sorted(p.name for p in folder.glob(f"digits-classifier-{key}.*")) == [f"digits-classifier-{key}.json", f"digits-classifier-{key}.safetensors"]
    loaded, loaded_report = clf._load(cfg)  # from disk, not the in-memory copy
    assert loaded is not model and loaded_report == report
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))


def test_a_corrupt_cache_names_the_file_to_delete(image_cache, tmp_path, monkeypatch):
    monkeypatch.setenv("DIFFKIT_CACHE", str(tmp_path))
    cfg = copy.deepcopy(clf.CONFIG)
    weights, meta = clf._paths(cfg)
    weights.parent.mkdir(parents=True)
    weights.write_bytes(b"garbage")
    meta.write_text("{}")
    with pytest.raises(clf.ClassifierError, match=f"{weights.name}.*delete"):
        clf._load(cfg)


def test_classifier_training_is_deterministic_across_thread_counts(image_cache):
    """The training rule fixes every draw and runs in one thread: the same weights whatever the caller's threads."""
    cfg = copy.deepcopy(clf.CONFIG)
    cfg["epochs"] = 1
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        a, report_a = clf.train_classifier(cfg)
        torch.set_num_threads(1)
        b, report_b = clf.train_classifier(cfg)
    finally:
        torch.set_num_threads(before)
    assert report_a == report_b
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    cfg["seed"] = 1
    c, _ = clf.train_classifier(cfg)
    assert not torch.equal(a.head.weight, c.head.weight)
    assert clf.config_key(cfg) != clf.config_key()


def test_classifier_input_conventions():
    x = torch.rand(2, 3, 16, 16)
    grey = clf.as_digit_batch(x)
    assert grey.shape == (2, 1, 8, 8)
    assert torch.allclose(grey, torch.nn.functional.avg_pool2d(x.mean(1, keepdim=True), 2))
    assert clf.as_digit_batch([torch.rand(8, 8)]).shape == (1, 1, 8, 8)
    with pytest.raises(ValueError, match="no images"):
        clf.as_digit_batch([])


# --- Frechet distance -------------------------------------------------------------------------------------
def test_frechet_of_the_test_set_against_itself_is_zero_and_noise_is_far(classifier, digits_splits):
    test, train = digits_splits["test"], digits_splits["train"]
    images, labels = images_and_labels(test)
    same = digits_frechet(ctx_of(images, labels, test, train=train))
    assert same["digits_frechet_distance"] < 1e-6
    assert same["digits_frechet_train_floor"] > 100 * max(same["digits_frechet_distance"], 1e-9)
    g = torch.Generator().manual_seed(0)
    noise = [torch.randint(0, 17, (1, 8, 8), generator=g).float() / 16 for _ in range(len(images))]
    far = digits_frechet(ctx_of(noise, None, test, train=train))
    assert far["digits_frechet_distance"] > 20 * far["digits_frechet_train_floor"]
    assert far["digits_frechet_ratio"] == pytest.approx(far["digits_frechet_distance"] / far["digits_frechet_train_floor"])
    # real held-out images (val) score close to the floor: ratio near 1, far below 2
    val_images, val_labels = images_and_labels(digits_splits["val"])
    real = digits_frechet(ctx_of(val_images, val_labels, test, train=train))
    assert real["digits_frechet_ratio"] < 1.6


def test_frechet_without_a_training_set_gives_only_the_distance(classifier, digits_splits):
    test = digits_splits["test"]
    out = digits_frechet(ctx_of(list(digits_splits["val"].images), None, test))
    assert set(out) == {"digits_frechet_distance"}
    with pytest.raises(ValueError, match="at least 2"):
        digits_frechet(ctx_of(list(test.images[:1]), None, test))


# --- class accuracy ---------------------------------------------------------------------------------------
def test_accuracy_of_real_labelled_test_images_is_the_classifiers_test_accuracy(classifier, digits_splits):
    _, report = classifier
    test = digits_splits["test"]
    images, labels = images_and_labels(test)
    right = digits_accuracy(ctx_of(images, labels, test))
    assert right["digits_accuracy"] == pytest.approx(report["test_accuracy"], abs=1e-6)  # the report holds a float32; one image is 1/359
    assert right["digits_reference_accuracy"] == pytest.approx(report["test_accuracy"], abs=1e-6)  # the report holds a float32; one image is 1/359
    assert 0.9 < right["digits_confidence"] <= 1.0
    wrong = digits_accuracy(ctx_of(images, [(y + 1) % 10 for y in labels], test))
    assert wrong["digits_accuracy"] < 0.05


def test_accuracy_refuses_bad_labels(classifier, digits_splits):
    test = digits_splits["test"]
    images, labels = images_and_labels(test)
    with pytest.raises(ValueError, match="one label per sample"):
        digits_accuracy(ctx_of(images, labels[:-1], test))
    with pytest.raises(ValueError, match="num_classes = 10"):
        digits_accuracy(ctx_of(images, None, test))
    with pytest.raises(ValueError, match="0..9"):
        digits_accuracy(ctx_of(images[:2], [3, 10], test))


def test_metrics_keep_the_metric_contract(classifier, digits_splits):
    test, train = digits_splits["test"], digits_splits["train"]
    g = torch.Generator().manual_seed(1)
    generated = [(x + 0.2 * torch.rand(x.shape, generator=g)).clamp(0, 1) for x in train.images[:100]]
    ctx = ctx_of(generated, train.labels[:100].tolist(), test, train=train)
    for metric in (digits_frechet, digits_accuracy):
        assert "output" in check_metric(metric, ctx)


def test_eval_reads_labels_from_a_reference_folder(classifier, digits_splits, tmp_path):
    """`diffkit eval --reference DIR`: the reference's labels come from the names `write` gave its files,
    so the reference accuracy is reported beside the samples' (here the same 60 real test images)."""
    from diffkit.evaluator import evaluate_path

    test = digits_splits["test"]
    images, labels = images_and_labels(test)
    test.space.write(images[:60], tmp_path / "samples", labels=labels[:60])
    test.space.write(images[:60], tmp_path / "reference", labels=labels[:60])
    result = evaluate_path("digits", tmp_path / "samples", reference=tmp_path / "reference")
    figures = result["figures"]
    assert result["n_labelled"] == 60 and result["n_reference"] == 60
    assert figures["digits_reference_accuracy"] == pytest.approx(figures["digits_accuracy"]) and figures["digits_accuracy"] > 0.9
