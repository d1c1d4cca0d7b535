import warnings

import numpy as np
import pytest
import soundfile as sf
import torch

from diffkit.testing import check_dataset
from diffkit_audio import data as audio_data
from diffkit_audio.data import DatasetError, audio_folder, spoken_digits


def test_spoken_digits_deterministic_and_well_formed():
    a = spoken_digits("val", eval_per_class=2, seed=3, cache=False)
    b = spoken_digits("val", eval_per_class=2, seed=3, cache=False)
    c = spoken_digits("val", eval_per_class=2, seed=4, cache=False)
    assert len(a) == 20 and torch.equal(a.waves, b.waves) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.waves, c.waves)
    assert sorted(a.labels.tolist()) == sorted(list(range(10)) * 2)
    x, label = a[0]
    assert x.shape == (1, 4096) and x.dtype == torch.float32 and isinstance(label, int)
    assert x.abs().max() <= 1.0 and x.abs().max() > 0.2  # peaks are drawn in [0.25, 0.9]
    a.space.validate(x)
    assert a.space.sample_rate == 8000 and a.space.name == "audio"


def test_spoken_digits_cache_is_safetensors_and_json(audio_cache, monkeypatch):
    first = spoken_digits("train", n_per_class=1, seed=5)
    files = sorted(p.name for p in (audio_cache / "spoken-digits").iterdir())
    stems = {f.rsplit(".", 1)[0] for f in files if "train-" in f}
    assert len(stems) == 1
    stem = stems.pop()
    assert f"{stem}.safetensors" in files and f"{stem}.json" in files
    assert not any(f.endswith((".pt", ".pkl", ".pickle")) for f in files)
    monkeypatch.setattr("diffkit_audio.espeak.synthesize", lambda *a, **k: pytest.fail("the cached split was synthesised again"))
    again = spoken_digits("train", n_per_class=1, seed=5)
    assert torch.equal(first.waves, again.waves)
    assert again.info["clips"][0]["voice"].startswith("en")


def test_spoken_digits_conformance():
    assert check_dataset(spoken_digits, options={"n_per_class": 1, "eval_per_class": 1}, name="spoken-digits") == ["factory", "items", "determinism", "space"]


def _write_folder(root):
    root.mkdir()
    (root / "a").mkdir()
    (root / "b").mkdir()
    t16 = np.arange(16000) / 16000
    sf.write(root / "a" / "tone16k.wav", 0.5 * np.sin(2 * np.pi * 440 * t16), 16000)
    t8 = np.arange(4000) / 8000
    stereo = np.stack([0.4 * np.sin(2 * np.pi * 440 * t8), 0.2 * np.sin(2 * np.pi * 440 * t8)], axis=1)
    sf.write(root / "a" / "stereo8k.wav", stereo, 8000)
    sf.write(root / "b" / "tone.flac", 0.3 * np.sin(2 * np.pi * 220 * t16[:8000]), 16000)
    (root / "b" / "corrupt.wav").write_bytes(b"RIFF\x00\x00garbage")


def test_audio_folder_resamples_mixes_down_and_skips_corrupt(tmp_path):
    root = tmp_path / "clips"
    _write_folder(root)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = audio_folder("all", root=str(root), sample_rate=16000, length=12000, labels="folder")
    assert any("corrupt.wav" in str(w.message) for w in caught)
    assert len(ds) == 3 and len(ds.skipped) == 1 and "corrupt.wav" in ds.skipped[0]
    items = {lab: [] for lab in (0, 1)}
    for i in range(len(ds)):
        x, lab = ds[i]
        assert x.shape == (1, 12000)
        items[lab].append(x)
    assert len(items[0]) == 2 and len(items[1]) == 1
    # stereo8k.wav (sorted before tone16k.wav): 0.5 s at 8 kHz -> 8000 samples at 16 kHz, mono average amplitude 0.3, then zero padding
    resampled = items[0][0]
    assert resampled[0, 8100:].abs().max() < 1e-3
    assert abs(float(resampled[0, 1000:7000].abs().max()) - 0.3) < 0.02
    spec = torch.fft.rfft(resampled[0, :8000]).abs()
    assert abs(float(spec.argmax()) * 16000 / 8000 - 440) < 3


def test_audio_folder_errors_are_one_line(tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.wav").write_bytes(b"nope")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(DatasetError, match="none of the 1 file") as err:
            audio_folder("all", root=str(bad))
    assert "\n" not in str(err.value)
    with pytest.raises(DatasetError, match="no folder given"):
        audio_folder("train")
    with pytest.raises(DatasetError, match="no audio files"):
        audio_folder("train", root=str(tmp_path / "bad" / ".."), labels="none") if False else audio_folder("train", root=str(_empty(tmp_path)))


def _empty(tmp_path):
    p = tmp_path / "empty"
    p.mkdir()
    return p


def test_audio_folder_conformance(tmp_path):
    root = tmp_path / "many"
    root.mkdir()
    for k in range(10):
        sf.write(root / f"clip{k}.wav", 0.1 * (k + 1) * np.sin(2 * np.pi * 100 * (k + 1) * np.arange(900) / 8000), 8000)
    opts = {"root": str(root), "sample_rate": 8000, "length": 1000, "val_fraction": 0.2, "test_fraction": 0.2}
    assert "determinism" in check_dataset(audio_folder, options=opts, name="audio-folder")
    sizes = [len(audio_folder(s, **opts)) for s in ("train", "val", "test")]
    assert sizes == [6, 2, 2]


def test_audio_folder_skips_a_float_wav_holding_nan_and_names_it(tmp_path):
    root = tmp_path / "clips"
    root.mkdir()
    t = np.arange(8000) / 16000
    good = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    bad = good.copy()
    bad[100] = np.nan
    sf.write(str(root / "good.wav"), good, 16000, subtype="FLOAT")
    sf.write(str(root / "nan.wav"), bad, 16000, subtype="FLOAT")
    with pytest.warns(UserWarning, match=r"skipped 1 unreadable file.*nan\.wav \(1 sample value\(s\) are NaN or infinite\)"):
        ds = audio_folder("all", root=str(root), sample_rate=16000, length=8000)
    assert len(ds) == 1 and torch.isfinite(ds.waves).all()
