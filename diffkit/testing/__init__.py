"""diffkit's conformance kit: checks that a component keeps its contract (docs/contracts.md).

In the manner of scikit-learn's ``check_estimator``: every check exercises one component, and a
component that breaks a contract raises :class:`ConformanceError` whose one-line message names the
check, the contract and the component, e.g. ``check_space[round-trip] failed for space 'image': ...``.

- :func:`check_space` (``space, examples``), :func:`check_process` (``process`` or factory, ``field``),
  :func:`check_backbone` (``factory_or_module, space, diffusion``), :func:`check_dataset` (``factory``),
  :func:`check_metric`, :func:`check_sampler`, :func:`check_representation` (``rep, elements, bound``), :func:`check_recipe` (trains a few steps, samples);
- :func:`check_plugin` (``distribution_name``) runs the right checks on every component a
  distribution registers; :func:`plugin_checks` gives them as ``(id, callable)`` pairs and
  :func:`parametrize_checks` as a pytest parametrisation::

      from diffkit.testing import parametrize_checks

      @parametrize_checks("diffkit-mymodality")
      def test_conformance(check):
          check()
"""
from diffkit.testing.backbones import EQUIVARIANCES, check_backbone, example_state
from diffkit.testing.datasets import check_dataset, check_metric
from diffkit.testing.environment import needs_shipped, private_cache
from diffkit.testing.errors import ConformanceError
from diffkit.testing.plugins import check_plugin, check_recipe, check_sampler, parametrize_checks, plugin_checks, shrink_recipe
from diffkit.testing.processes import build_process, check_process
from diffkit.testing.representations import check_representation
from diffkit.testing.spaces import check_space

__all__ = [
    "ConformanceError", "EQUIVARIANCES", "build_process", "check_backbone", "check_dataset", "check_metric", "check_plugin", "check_process",
    "check_recipe", "check_representation", "check_sampler", "check_space", "example_state", "needs_shipped", "parametrize_checks", "plugin_checks", "private_cache", "shrink_recipe",
]
