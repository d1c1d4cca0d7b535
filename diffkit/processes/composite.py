"""One process per field of a State, all driven by one shared time variable ``t``."""
from __future__ import annotations

from typing import Mapping

import torch

from diffkit.state import MASK_FIELDS, State, field_mask


class Diffusion:
    """Forward noising of a whole State: ``fields[name] = (process, layout)``.

    ``layout`` (``"dense"``, ``"node"`` or ``"pair"``) names the mask that applies to the field;
    masks (``state["mask"]``) travel through untouched. The first Gaussian field's process sets the
    training-time distribution and the sampling schedule; categorical fields follow the same ``t``.
    """

    def __init__(self, processes: Mapping[str, object], layouts: Mapping[str, str] | None = None):
        if not processes:
            raise ValueError("Diffusion needs at least one field process")
        self.processes = dict(processes)
        self.layouts = {name: (layouts or {}).get(name, "dense") for name in self.processes}

    # -------------------------------------------------------------------------------------
    @property
    def gaussian_fields(self) -> list[str]:
        return [k for k, p in self.processes.items() if p.kind == "gaussian"]

    @property
    def categorical_fields(self) -> list[str]:
        return [k for k, p in self.processes.items() if p.kind == "categorical"]

    @property
    def primary(self):
        """The process that sets time: the first Gaussian one, else the first categorical one."""
        for name in self.gaussian_fields + self.categorical_fields:
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
        """Draw ``x_t ~ q(x_t | x_0)`` for every field; returns the noisy State and the Gaussian noises."""
        noisy = State({k: v for k, v in x0.items() if k in MASK_FIELDS})
        eps = {}
        for name, proc in self.processes.items():
            if name not in x0:
                raise KeyError(f"the state has no field {name!r} that the diffusion noises; its fields are {list(x0)}")
            mask = self.mask_for(x0, name)
            if proc.kind == "gaussian":
                eps[name] = proc.noise(x0[name], generator, mask)
                noisy[name] = proc.q_sample(x0[name], t, eps[name])
            else:
                noisy[name] = proc.q_sample(x0[name], t, generator)
        for k, v in x0.items():  # fields not diffused (conditioning, say) travel unchanged
            noisy.setdefault(k, v)
        return noisy, eps

    def prior(self, template: State, generator: torch.Generator | None = None) -> State:
        """Draw ``x_T`` for every field, shaped like ``template`` (whose mask fixes graph sizes).

        Template fields this diffusion does not noise (masks, conditioning such as a vocoder's mel
        frames) are carried into ``x_T`` unchanged, so every sampler step hands them to the backbone."""
        out = State({k: v for k, v in template.items() if k in MASK_FIELDS or k not in self.processes})
        for name, proc in self.processes.items():
            mask = self.mask_for(template, name)
            like = template[name]
            if proc.kind == "gaussian":
                out[name] = proc.prior(like, generator, mask)
            else:
                shape_like = like if like.shape[-1] == proc.num_states else like.new_zeros(*like.shape[:-1], proc.num_states)
                out[name] = proc.prior(shape_like, generator)
        return out

    def config(self) -> dict:
        return {name: {"process": proc.name, "layout": self.layouts[name], **proc.config()} for name, proc in self.processes.items()}

    def __repr__(self) -> str:
        return "Diffusion(" + ", ".join(f"{k}={p!r}" for k, p in self.processes.items()) + ")"
