"""Shared test set-up: the hypothesis profiles (``HYPOTHESIS_PROFILE=...``, default ``ci``).

- ``ci``: the quick profile CI and ``pytest`` run: 25 examples per law, no deadline (CI
  machines are noisy).
- ``dev``: 10 examples, for a fast loop while editing.
- ``thorough``: ten times ``ci``'s examples (laws with their own budget, ``examples(n)``, scale
  too) and no deadline: ``HYPOTHESIS_PROFILE=thorough pytest -m law`` (docs/laws.md).
"""
import os

from hypothesis import HealthCheck, settings

from minilora.testing import QUICK_EXAMPLES

settings.register_profile("ci", deadline=None, max_examples=QUICK_EXAMPLES,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", deadline=None, max_examples=10)
settings.register_profile("thorough", deadline=None, max_examples=10 * QUICK_EXAMPLES,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
