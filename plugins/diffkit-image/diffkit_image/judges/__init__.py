"""The image judges' weights (8×8 digits, 28×28 MNIST), shipped so that every machine scores with the same networks.

Their training rule is seeded and single-threaded, but float32 kernels of another CPU vector width round differently,
so a judge retrained on another machine is another judge (the audio plugin's, retrained on another machine,
moved a model's class accuracy by 0.04 on clips drawn with the same seed). ``<name>-<key>.safetensors`` + ``.json`` are exactly the
cache files of :func:`diffkit_image.classifier.digits_classifier` (trained 2026-12-03 on an AMD EPYC, AVX2, torch
2.14.1); a configuration without shipped weights is still trained and cached.
"""
