"""Property-based API testing with schemathesis against the app's own OpenAPI spec.

Every generated request (valid or not) must get a documented status code, a body matching the documented
schema and content type, and never a 5xx. Examples are bounded so the test stays short.
"""

from __future__ import annotations

import warnings

import pytest
from hypothesis import HealthCheck, given, settings

schemathesis = pytest.importorskip(
    "schemathesis", reason="schemathesis is not installed (pip install schemathesis)"
)

from rationalign.data.types import LabelSpace  # noqa: E402
from rationalign.models.classifier import IntentClassifier  # noqa: E402
from rationalign.serving.app import create_app  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    clf = IntentClassifier.tiny(LabelSpace(["card_block", "card_activate", "alarm_set"]), arch="bert", seed=0)
    clf.abstain_threshold = 0.4
    # Small limits make the 413 paths reachable by generated data.
    app = create_app(
        clf.save(tmp_path_factory.mktemp("schema") / "model"), max_text_chars=200, max_batch=8, max_wait_ms=0
    )
    state = app.state.serving
    state.start()  # schemathesis calls the ASGI app without its lifespan
    yield app
    state.stop()


@pytest.fixture(scope="module")
def api_schema(app):
    # 413 is how this API rejects texts or batches over its documented maxLength / maxItems.
    config = schemathesis.config.SchemathesisConfig.from_dict(
        {"checks": {"negative_data_rejection": {"expected-statuses": ["400", "401", "413", "422"]}}}
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return schemathesis.openapi.from_asgi("/openapi.json", app, config=config)


# schemathesis' own pytest plugin (``from_fixture``) does not work with pytest 9, so hypothesis drives it.
# Negative (schema-violating) data only where there is an input to violate.
CASES = [
    ("/predict", "POST", "positive"),
    ("/predict", "POST", "negative"),
    ("/explain", "POST", "positive"),
    ("/explain", "POST", "negative"),
    ("/health", "GET", "positive"),
    ("/metrics", "GET", "positive"),
]


@pytest.mark.parametrize(("path", "method", "mode"), CASES)
def test_api_conforms_to_its_openapi_spec(api_schema, path, method, mode):
    from schemathesis import GenerationMode

    operation = api_schema[path][method]
    generation = GenerationMode.POSITIVE if mode == "positive" else GenerationMode.NEGATIVE
    seen_statuses: set[int] = set()

    @given(case=operation.as_strategy(generation))
    @settings(
        max_examples=20,
        deadline=None,
        derandomize=True,  # the same examples every run: a failure reproduces
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    def check(case):
        response = case.call_and_validate()
        seen_statuses.add(response.status_code)

    check()
    assert seen_statuses, "no request was generated"
    if mode == "negative":
        assert seen_statuses <= {413, 422}, seen_statuses
