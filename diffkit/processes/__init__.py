"""Forward noise processes, one field at a time, and their composition over one time variable.

Each registered process is a factory ``factory(field: FieldSpec, **options) -> process`` so that
recipes can name a process per field and the factory reads what it needs (number of classes,
symmetry) from the space's field description. Every process belongs to a family, a subclass of
:class:`FieldProcess` (the built-in ones: :class:`GaussianProcess`, :class:`CategoricalProcess`).
"""
from __future__ import annotations

from diffkit.processes.base import FieldProcess
from diffkit.processes.categorical import CategoricalProcess, absorbing, marginal, uniform
from diffkit.processes.composite import Diffusion
from diffkit.processes.discrete_flow import DiscreteFlow
from diffkit.processes.discrete_flow import discrete_flow_marginal as _dfm_marginal
from diffkit.processes.discrete_flow import discrete_flow_masked as _dfm_masked
from diffkit.processes.discrete_flow import discrete_flow_uniform as _dfm_uniform
from diffkit.processes.flow import CosineFlow, FlowPath, LinearFlow, VPFlow
from diffkit.processes.gaussian import EDM, VE, GaussianProcess, VPCosine, VPLinear, ZeroCoMGaussian, _zero_com_from_config
from diffkit.spaces.base import FieldSpec


def _gaussian(cls):
    def factory(field: FieldSpec | None = None, **options):
        proc = cls(**options)
        if field is not None and field.zero_mean:
            return ZeroCoMGaussian(proc)
        return proc

    factory.__doc__ = cls.__doc__
    return factory


vp_linear = _gaussian(VPLinear)
vp_cosine = _gaussian(VPCosine)
ve = _gaussian(VE)
edm = _gaussian(EDM)
flow_linear = _gaussian(LinearFlow)
flow_cosine = _gaussian(CosineFlow)
flow_vp = _gaussian(VPFlow)


def zero_com_gaussian(field: FieldSpec | None = None, **options) -> ZeroCoMGaussian:
    return _zero_com_from_config(**options)


def _categorical(fn):
    def factory(field: FieldSpec, **options):
        if field is None or field.kind != "categorical":
            raise ValueError(f"a categorical process needs a categorical field; field {getattr(field, 'name', None)!r} is {getattr(field, 'kind', None)!r}")
        return fn(field.num_classes, symmetric=field.symmetric, **options)

    factory.__doc__ = fn.__doc__
    return factory


categorical_uniform = _categorical(uniform)
categorical_absorbing = _categorical(absorbing)
categorical_marginal = _categorical(marginal)
discrete_flow_uniform = _categorical(_dfm_uniform)
discrete_flow_masked = _categorical(_dfm_masked)
discrete_flow_marginal = _categorical(_dfm_marginal)

__all__ = [
    "CategoricalProcess", "CosineFlow", "Diffusion", "DiscreteFlow", "EDM", "FieldProcess", "FlowPath", "GaussianProcess", "LinearFlow", "VPFlow", "VE", "VPCosine", "VPLinear", "ZeroCoMGaussian",
    "categorical_absorbing", "categorical_marginal", "categorical_uniform", "discrete_flow_marginal", "discrete_flow_masked", "discrete_flow_uniform", "edm", "flow_cosine", "flow_linear", "flow_vp", "ve", "vp_cosine", "vp_linear", "zero_com_gaussian",
]
