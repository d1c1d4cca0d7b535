"""The contract every data space keeps.

A space says what an element is (:meth:`Space.validate`), turns elements into the named tensors the
engine diffuses (:meth:`Space.collate`), turns samples back into elements (:meth:`Space.decode`) and
writes them in their natural form (:meth:`Space.write`).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import torch

from diffkit.state import State


class SpaceError(ValueError):
    """An element does not belong to a space. The message names the problem and the fix."""


@dataclass(frozen=True)
class FieldSpec:
    """What one field of a State holds.

    ``kind`` is ``"continuous"`` (diffused by a Gaussian process) or ``"categorical"`` (one-hot over
    ``num_classes``, diffused by a categorical process). ``layout`` says which mask applies:
    ``"dense"`` (none), ``"node"`` (B×n) or ``"pair"`` (B×n×n, symmetric).

    ``diffused = False`` marks a conditioning field (a vocoder's mel frames, say): ``collate`` computes
    it beside the diffused fields, every State carries it to the backbone unchanged, the recipe gives it
    no process, and at sampling time its values come from the reference split (``diffkit.runs.generate``).
    """

    name: str
    kind: str = "continuous"
    layout: str = "dense"
    num_classes: int = 0
    symmetric: bool = False
    zero_mean: bool = False
    diffused: bool = True

    def to_dict(self) -> dict:
        return asdict(self)


class Space:
    """Base class of data spaces. Subclasses set :attr:`fields` and implement the four verbs."""

    name = "space"
    fields: tuple[FieldSpec, ...] = ()

    # --- what is an element -------------------------------------------------------------
    def validate(self, item: Any) -> Any:
        """Return ``item`` in canonical form, or raise :class:`SpaceError` naming the problem and fix."""
        raise NotImplementedError

    # --- data -> tensors ----------------------------------------------------------------
    def collate(self, items: Sequence[Any], *, train: bool = False, generator: torch.Generator | None = None) -> State:
        """Validate and stack elements into a batch State (``train=True`` may dequantise)."""
        raise NotImplementedError

    def train_transform(self, state: State, generator: torch.Generator | None = None) -> State:
        """Per-batch training augmentation of an encoded State (e.g. dequantisation); identity by default."""
        return state

    # --- tensors -> data ----------------------------------------------------------------
    def decode(self, state: State) -> list:
        """Turn a sampled State back into a list of elements (quantise, clamp, argmax, symmetrise)."""
        raise NotImplementedError

    def write(self, items: list, out: Path, *, labels=None, reference: list | None = None, title: str = "", **kwargs) -> list[Path]:
        """Write decoded elements under directory ``out`` in the modality's natural form.

        ``labels``: class labels to put in file names (``read_labelled`` reads them back); ``reference``:
        reference elements a space may draw beside the samples (a scatter plot over the data, say);
        ``title``: a caption for figures. A space uses what it can show and ignores the rest."""
        raise NotImplementedError

    def natural(self, items: list) -> list:
        """Decoded elements in the modality's natural Python form (what ``diffkit.load(...).sample`` returns):
        the elements themselves unless a space says otherwise (audio: ``AudioClip(wave, rate)``; molecules: RDKit)."""
        return list(items)

    def read(self, path: Path) -> tuple[list, list[dict]]:
        """Read samples written in the modality's natural form (a file or a folder).

        Returns ``(elements, failures)``; each failure is ``{"item": name, "reason": text}``: a bad
        sample is counted and reported, never fatal."""
        raise NotImplementedError(f"space {self.name!r} cannot read sample files; its plugin should implement Space.read")

    def read_labelled(self, path: Path) -> tuple[list, list[int] | None, list[dict]]:
        """:meth:`read`, plus the class label of each element where the files say it (``write`` with
        ``labels`` names them so), else ``None``. Returns ``(elements, labels, failures)``;
        ``diffkit eval`` uses it so that class-conditional samples are scored against their labels."""
        items, failures = self.read(path)
        return items, None, failures

    # --- data statistics and sampling templates -----------------------------------------
    def fit(self, items: Sequence[Any]) -> dict:
        """JSON-serialisable statistics of training elements that sampling needs later (graph sizes,
        class frequencies). Stored in the checkpoint's config and handed back to :meth:`template`."""
        return {}

    def template(self, batch_size: int, stats: dict | None = None, generator: torch.Generator | None = None) -> State:
        """A State of zeros with the shapes (and masks) of ``batch_size`` elements to sample.

        The default uses one collated element's shapes; spaces of variable size override it."""
        raise NotImplementedError

    # --- constraints a sampler may keep -----------------------------------------------
    def constraints(self) -> dict[str, str]:
        """The constraints this space offers samplers, ``{name: one-line description}``; none by default.

        A constraint is a rule that every element satisfies and that a sampler can keep while it moves, such as
        "no atom exceeds its valence". :meth:`constraint` builds one; ``[sample] constraint = "<name>"`` (or
        ``diffkit sample --constraint``) applies it after every level of a sampler that accepts one."""
        return {}

    def constraint(self, name: str) -> Callable[[State, State], State]:
        """The constraint ``name`` as a function ``keep(x_t, x_s) -> x_s'``: given the state before a sampler's
        level and the state it proposes, return the proposal with every change that breaks the rule undone
        (reverted to its value in ``x_t``) and everything else as proposed. It never changes a State that already
        keeps the rule, so encoded data pass through it unchanged (the conformance kit checks both)."""
        offered = self.constraints()
        raise SpaceError(f"space {self.name!r} has no constraint {name!r}; "
                         + (f"it offers {sorted(offered)}" if offered else "it offers none: leave [sample] constraint unset"))

    # --- description ------------------------------------------------------------------
    def config(self) -> dict:
        """JSON-serialisable keyword arguments that rebuild this space."""
        raise NotImplementedError

    def field(self, name: str) -> FieldSpec:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(f"space {self.name!r} has no field {name!r}; its fields are {[f.name for f in self.fields]}")

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"


def as_float_tensor(value: Any, what: str) -> torch.Tensor:
    """Convert numbers, lists, NumPy arrays or tensors to a float32 tensor, refusing NaN/inf."""
    try:
        tensor = torch.as_tensor(value)
    except Exception as exc:  # noqa: BLE001 - re-raised with a clear message
        raise SpaceError(f"{what}: cannot convert {type(value).__name__} to a tensor ({exc}); pass a tensor or NumPy array") from None
    if tensor.dtype == torch.bool or tensor.is_complex():
        raise SpaceError(f"{what}: got dtype {tensor.dtype}; pass real numbers")
    if not tensor.is_floating_point():
        return tensor
    tensor = tensor.float()
    if not torch.isfinite(tensor).all():
        bad = int((~torch.isfinite(tensor)).sum())
        raise SpaceError(f"{what}: {bad} value(s) are NaN or infinite; clean the data before encoding")
    return tensor


def check_items(items: Iterable[Any], what: str) -> list:
    items = list(items)
    if not items:
        raise SpaceError(f"{what}: got an empty batch; pass at least one element")
    return items


def text_lines(path: Path) -> tuple[list[tuple[int, str]], list[dict]]:
    """The non-blank lines of a text file as ``(line number, text)``, and a failure (``{"item", "reason"}``)
    for each line that is not UTF-8, so one bad byte costs one line, never the file."""
    path = Path(path)
    lines, failures = [], []
    for k, raw in enumerate(path.read_bytes().splitlines(), 1):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            failures.append({"item": f"{path.name} line {k}", "reason": f"not UTF-8 text (byte {raw[exc.start]:#04x} at column {exc.start + 1})"})
            continue
        if text.strip():
            lines.append((k, text))
    return lines, failures
