"""Every DiT family variant of the tiny zoo through the adapter conformance suite.

One class-scoped case per variant (``dit_engine.testing.zoo``): threshold 0 reproduces plain
diffusers bit for bit, a cache skips real block forwards and keeps the output shape, step
forecasting and TeaCache run, CFG branches and second transformers keep separate state, and
``remove()`` restores outputs and module structure. The checks the four first-party suites in
tests/testing already cover on every adapter kind (diffusers hooks afterwards, no leak between
requests) are left out here to keep the matrix inside the CI budget.
"""

from __future__ import annotations

import pytest

from dit_engine.testing.conformance import AdapterConformance
from dit_engine.testing.zoo import build_case, load_zoo

VARIANTS = sorted(load_zoo())


class TestFamily(AdapterConformance):
    @pytest.fixture(scope="class", params=VARIANTS)
    def case(self, request):
        return build_case(request.param)

    test_diffusers_hook_works_afterwards = None
    test_no_state_leaks_between_requests = None
