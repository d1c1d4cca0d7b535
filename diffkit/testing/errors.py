"""The error every conformance check raises, and the small helpers the checks share."""
from __future__ import annotations

import json
from contextlib import contextmanager

import torch


class ConformanceError(AssertionError):
    """A component breaks one of the contracts of docs/contracts.md.

    The message is one line: ``check_<kind>[<contract>] failed for <kind> '<name>': <what> ; <fix>``.
    It subclasses :class:`AssertionError` so that pytest reports it as a test failure.
    """

    def __init__(self, kind: str, contract: str, name: str, detail: str):
        self.kind, self.contract, self.component, self.detail = kind, contract, name, detail
        one_line = " ".join(str(detail).split())
        super().__init__(f"check_{kind}[{contract}] failed for {kind} {name!r}: {one_line}")


class Checker:
    """Raises :class:`ConformanceError` for one component: ``ck.fail("round-trip", "...")``."""

    def __init__(self, kind: str, name: str):
        self.kind, self.name = kind, str(name)

    def fail(self, contract: str, detail: str):
        raise ConformanceError(self.kind, contract, self.name, detail)

    def require(self, condition, contract: str, detail: str) -> None:
        if not condition:
            self.fail(contract, detail)

    @contextmanager
    def step(self, contract: str, what: str):
        """Turn any exception raised inside into a ConformanceError naming ``contract``."""
        try:
            yield
        except ConformanceError:
            raise
        except Exception as exc:  # noqa: BLE001 - every failure of a component is reported as a contract failure
            self.fail(contract, f"{what} raised {type(exc).__name__}: {_first_line(exc)}")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else "(no message)"


def component_name(obj, default: str = "") -> str:
    for attr in ("name", "__name__"):
        value = getattr(obj, attr, None)
        if isinstance(value, str) and value:
            return value
    return default or type(obj).__name__


def json_roundtrip(value):
    """``value`` through JSON (raises TypeError when it holds tensors or other non-JSON objects)."""
    return json.loads(json.dumps(value))


def max_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    if a.numel() == 0:
        return 0.0
    return float((a.double() - b.double()).abs().max())
