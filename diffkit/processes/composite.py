"""One process per field of a State, all driven by one shared time variable ``t``."""
from __future__ import annotations

from typing import Mapping

import torch

from diffkit.processes.base import FieldProcess
from diffkit.processes.categorical import CategoricalProcess
from diffkit.processes.gaussian import GaussianProcess
from diffkit.state import MASK_FIELDS, State, field_mask


class Diffusion:
    """Forward noising of a whole State: ``fields[name] = (process, layout)``.

    ``layout`` (``"dense"``, ``"node"`` or ``"pair"``) names the mask that applies to the field;
    masks (``state["mask"]``) travel through untouched. Every process keeps the family contract
    :class:`diffkit.processes.FieldProcess`. The first Gaussian field's process sets the training-time
    distribution and the sampling schedule; fields of other families follow the same ``t``.
    """

    def __init__(self, processes: Mapping[str, FieldProcess], layouts: Mapping[str, str] | None = None):
        if not processes:
            raise ValueError("Diffusion needs at least one field process")
        for name, proc in processes.items():
            if not isinstance(proc, FieldProcess):
                raise TypeError(f"the process for field {name!r} is a {type(proc).__name__}, not a diffkit.processes.FieldProcess; "
                                f"subclass GaussianProcess, CategoricalProcess or FieldProcess (docs/contracts.md)")
        self.processes = dict(processes)
        self.layouts = {name: (layouts or {}).get(name, "dense") for name in self.processes}

    # -------------------------------------------------------------------------------------
    def fields_of(self, family: type | tuple[type, ...]) -> list[str]:
        """The fields whose process belongs to ``family`` (a FieldProcess subclass, or a tuple of them)."""
        return [k for k, p in self.processes.items() if isinstance(p, family)]

    @property
    def gaussian_fields(self) -> list[str]:
        return self.fields_of(GaussianProcess)

    @property
    def categorical_fields(self) -> list[str]:
        return self.fields_of(CategoricalProcess)

    @property
    def primary(self) -> FieldProcess:
        """The process that sets time: the first Gaussian one, else the first one."""
        for name in self.gaussian_fields + list(self.processes):
            return self.processes[name]

    @property
    def t_min(self) -> float:
        return max(p.t_min for p in self.processes.values())

    @property
    def t_max(self) -> float:
        return min(p.t_max for p in self.processes.values())

    def sample_t(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        t = self.primary.sample_t(n, generator)
        return t.clamp(self.t_min, self.t_max) if len(self.processes) > 1 else t

    def mask_for(self, state: State, name: str) -> torch.Tensor | None:
        return field_mask(state, self.layouts[name])

    # -------------------------------------------------------------------------------------
    def noise(self, x0: State, t: torch.Tensor, generator: torch.Generator | None = None) -> tuple[State, dict]:
        """Draw ``x_t ~ q(x_t | x_0)`` for every field (each family's ``diffuse``); returns the noisy State and
        the noises drawn, for the fields whose family returns one (the Gaussian ``eps``)."""
        noisy = State({k: v for k, v in x0.items() if k in MASK_FIELDS})
        eps = {}
        for name, proc in self.processes.items():
            if name not in x0:
                raise KeyError(f"the state has no field {name!r} that the diffusion noises; its fields are {list(x0)}")
            noisy[name], noise = proc.diffuse(x0[name], t, generator, self.mask_for(x0, name))
            if noise is not None:
                eps[name] = noise
        for k, v in x0.items():  # fields not diffused (conditioning, say) travel unchanged
            noisy.setdefault(k, v)
        return noisy, eps

    def prior(self, template: State, generator: torch.Generator | None = None) -> State:
        """Draw ``x_T`` for every field, shaped like ``template`` (whose mask fixes graph sizes).

        Template fields this diffusion does not noise (masks, conditioning such as a vocoder's mel
        frames) are carried into ``x_T`` unchanged, so every sampler step hands them to the backbone."""
        out = State({k: v for k, v in template.items() if k in MASK_FIELDS or k not in self.processes})
        for name, proc in self.processes.items():
            out[name] = proc.prior(template[name], generator, self.mask_for(template, name))
        return out

    def config(self) -> dict:
        return {name: {"process": proc.name, "layout": self.layouts[name], **proc.config()} for name, proc in self.processes.items()}

    def __repr__(self) -> str:
        return "Diffusion(" + ", ".join(f"{k}={p!r}" for k, p in self.processes.items()) + ")"
