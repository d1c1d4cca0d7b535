"""eSpeak NG speech synthesis through ctypes, using the library and voice data of ``espeakng-loader``.

libespeak-ng keeps hidden state between utterances (intonation and filter memories), so the same
request gives different samples depending on what was spoken before it in the process. To make
synthesis a pure function of the request list, :func:`synthesize` runs the whole list in a fresh
worker process (``python -m diffkit_audio.espeak``) that initialises the library, seeds its random
generator (``espeak_ng_SetRandSeed``) and speaks the requests in order. Standard library + NumPy only
in the worker (no torch import), so it starts in a fraction of a second.

A request is ``{"text": str, "voice": "en-us+f3", "rate": words/min, "pitch": 0..99, "range": 0..99,
"gap": word gap (10 ms units)}``; the result is one int16 array per request at :data:`ESPEAK_RATE` Hz.
"""
from __future__ import annotations

import json
import struct
import subprocess
import sys

ESPEAK_RATE = 22050  # libespeak-ng's native output rate
# espeak_PARAMETER values (speak_lib.h)
_RATE, _VOLUME, _PITCH, _RANGE, _WORDGAP = 1, 2, 3, 4, 7
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_CHARS_UTF8 = 1


class EspeakError(RuntimeError):
    """eSpeak NG could not be loaded or refused a request. The message says what to do."""


def _worker(requests: list[dict], seed: int) -> list[bytes]:
    import ctypes

    try:
        import espeakng_loader
    except ImportError:
        raise EspeakError("espeakng-loader is not installed; pip install espeakng-loader (it ships libespeak-ng and its voices)") from None
    try:
        lib = ctypes.CDLL(espeakng_loader.get_library_path())
        data = espeakng_loader.get_data_path()
    except (OSError, RuntimeError) as exc:
        raise EspeakError(f"cannot load libespeak-ng from espeakng-loader ({exc}); reinstall it: pip install --force-reinstall espeakng-loader") from None
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
    lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
    rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data.encode(), 0)
    if rate != ESPEAK_RATE:
        raise EspeakError(f"libespeak-ng initialised at {rate} Hz (expected {ESPEAK_RATE}); check the espeakng-loader installation")
    chunks: list[bytes] = []
    callback_type = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)

    def on_audio(wav, n, _events):
        if n > 0 and wav:
            chunks.append(ctypes.string_at(wav, 2 * n))
        return 0

    callback = callback_type(on_audio)  # kept alive for the whole loop
    lib.espeak_SetSynthCallback(callback)
    lib.espeak_ng_SetRandSeed(int(seed))
    out = []
    for req in requests:
        chunks.clear()
        if lib.espeak_SetVoiceByName(str(req["voice"]).encode()) != 0:
            raise EspeakError(f"eSpeak NG has no voice {req['voice']!r}; use a language code such as 'en-us', optionally with a variant ('en-us+f3')")
        for param, key, default in ((_RATE, "rate", 175), (_PITCH, "pitch", 50), (_RANGE, "range", 50), (_WORDGAP, "gap", 0), (_VOLUME, "volume", 100)):
            lib.espeak_SetParameter(param, int(req.get(key, default)), 0)
        text = str(req["text"]).encode()
        lib.espeak_Synth(text, len(text) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
        lib.espeak_Synchronize()
        out.append(b"".join(chunks))
    return out


def synthesize(requests: list[dict], seed: int = 0, timeout: float = 300.0) -> list:
    """Speak every request in a fresh worker process; returns one int16 NumPy array per request (22050 Hz)."""
    import numpy as np

    payload = json.dumps({"requests": requests, "seed": int(seed)}).encode()
    proc = subprocess.run([sys.executable, "-m", "diffkit_audio.espeak"], input=payload, capture_output=True, timeout=timeout)
    if proc.returncode != 0:
        lines = proc.stderr.decode(errors="replace").strip().splitlines()
        raise EspeakError(f"eSpeak NG synthesis failed: {lines[-1] if lines else 'exit code ' + str(proc.returncode)}")
    blob, waves, pos = proc.stdout, [], 0
    for _ in requests:
        (n,) = struct.unpack_from("<Q", blob, pos)
        pos += 8
        waves.append(np.frombuffer(blob, dtype="<i2", count=n // 2, offset=pos).copy())
        pos += n
    return waves


def _main() -> None:
    try:
        job = json.loads(sys.stdin.buffer.read())
        waves = _worker(job["requests"], job.get("seed", 0))
    except EspeakError as exc:
        print(f"EspeakError: {exc}", file=sys.stderr)
        sys.exit(2)
    out = sys.stdout.buffer
    for w in waves:
        out.write(struct.pack("<Q", len(w)))
        out.write(w)
    out.flush()


if __name__ == "__main__":
    _main()
