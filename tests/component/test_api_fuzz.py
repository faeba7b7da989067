"""API fuzzing with schemathesis against the OpenAPI spec: no request, valid or not, makes the server fail (5xx),
and every refusal is a problem+json without a traceback.

Bounded for CI: a few examples per operation and mode, derandomized (the same inputs every run). For a deeper
search, set CLASSIFLY_FUZZ_EXAMPLES (e.g. 200), CLASSIFLY_FUZZ_SEED (any number, for new inputs) and
CLASSIFLY_FUZZ_BUDGET_S (seconds before the rest of the operations get one example each; default 90).
Half the generated requests use ids of a real model, picture, version, task, job and run of the caller's, so the
fuzzing reaches past 'not found'.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import quote

import hypothesis
import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.generation import GenerationMode

from cluster import security
from cluster.catalog import jobs as catalog_jobs
from cluster.catalog import tasks as catalog_tasks
from cluster.catalog import users as catalog_users
from cluster.catalog.db import new_id, utcnow
from cluster.catalog.tasks import NewTask
from cluster.services import Services
from serve.api import create_api
from tests.component.conftest import Account, api_client, create_account, create_model
from tests.component.test_api_classify import FakeClassifier, publish
from tests.factories import make_image

EXAMPLES = int(os.environ.get("CLASSIFLY_FUZZ_EXAMPLES", "6"))
SEED = os.environ.get("CLASSIFLY_FUZZ_SEED")
# Past this many seconds each remaining operation gets a single example (every one is still called).
BUDGET_S = float(os.environ.get("CLASSIFLY_FUZZ_BUDGET_S", "90"))


@dataclass(frozen=True)
class RealIds:
    model_id: str
    class_name: str
    image_id: int
    version: int
    task_id: str
    job_id: str


def plant(services: Services, client, alice: Account) -> RealIds:
    model_id = create_model(services, alice, "fuzzed")
    pictures = [("files", (f"{n}.png", make_image(mark=n + 1), "image/png")) for n in range(4)]
    uploaded = client.post(
        f"/v1/models/{model_id}/images", data={"label": "red"}, files=pictures, headers=alice.headers
    )
    assert uploaded.status_code == 201, uploaded.text
    publish(services, alice, model_id)
    task_id = new_id("tsk")
    top = [{"label": "red", "probability": 0.8}, {"label": "blue", "probability": 0.2}]
    services.catalog.call_sync(
        catalog_tasks.record_tasks, alice.id, model_id, [NewTask(task_id, 1, "red", 0.8, False, top, 2.0)]
    )
    job = services.catalog.call_sync(catalog_jobs.create_job, alice.id, "import", model_id=model_id)
    services.catalog.call_sync(catalog_jobs.finish_job, job.id, status="succeeded", message="ok", result={})
    return RealIds(model_id, "red", uploaded.json()["results"][0]["image_id"], 1, task_id, job.id)


def session_token(services: Services, user_id: str) -> str:
    """A fresh session: a fuzzed logout or token revocation must not sign the next request out."""
    secret, token_hash, hint = security.new_token("session")
    services.catalog.call_sync(
        catalog_users.create_token,
        user_id,
        name="fuzz",
        kind="session",
        token_hash=token_hash,
        hint=hint,
        expires_at=utcnow() + timedelta(hours=1),
    )
    return secret


@pytest.fixture
def quiet_server_log() -> Iterator[None]:
    # A 500 is caught by the assertions below; its logged traceback would only drown the report.
    logger = logging.getLogger("classifly.api")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    yield
    logger.setLevel(level)


def check_answer(case, call: Callable[[], object], failures: list[str], label: str) -> None:
    """Call the API with one generated request; note a server failure or a refusal that is not problem+json."""
    where = f"{label}: {case.as_curl_command()[:500]}"
    try:
        response = call()
    except Exception as error:  # noqa: BLE001 - the test client re-raises what became a 500
        failures.append(f"500 ({type(error).__name__}: {str(error)[:200]}) from {where}")
        return
    if response.status_code >= 500:
        failures.append(f"{response.status_code} from {where}\n  {response.text[:300]}")
    elif response.status_code >= 400:
        content_type = response.headers.get("content-type", [""])[0]  # schemathesis: name -> list of values
        if not content_type.startswith("application/problem+json") or "Traceback" in response.text:
            failures.append(f"{response.status_code} not as problem+json from {where}: {content_type}")


def fuzz_operation(operation, mode: GenerationMode, examples: int, real: RealIds, bearer: Callable[[], str]):
    """A Hypothesis test of one operation in one mode; returns the failures it found."""
    failures: list[str] = []
    label = f"{operation.label} ({mode.value})"

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=SEED is None,
        suppress_health_check=list(HealthCheck),
        phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
    )
    @given(case=operation.as_strategy(generation_mode=mode), use_real_ids=st.booleans())
    def fuzz(case, use_real_ids: bool) -> None:
        if use_real_ids and case.path_parameters:
            for name in case.path_parameters:
                if hasattr(real, name):
                    case.path_parameters[name] = getattr(real, name)
        check_answer(case, lambda: case.call(headers={"Authorization": f"Bearer {bearer()}"}), failures, label)

    if SEED is not None:
        fuzz = hypothesis.seed(int(SEED))(fuzz)
    try:
        fuzz()
    except hypothesis.errors.Unsatisfiable:
        pass  # e.g. no invalid request exists for an operation without parameters (GET /v1/health)
    return failures


def test_no_request_makes_the_server_fail(services: Services, quiet_server_log: None) -> None:
    app = create_api(services, FakeClassifier())
    with api_client(services) as client:  # only to plant: the fuzzed requests go to `app`
        alice = create_account(services, "alice")
        real = plant(services, client, alice)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    # Deleting the model first would turn every later real id into 'not found': deletions go last.
    operations.sort(key=lambda operation: operation.method.upper() == "DELETE")
    failures: list[str] = []
    started = time.monotonic()

    for operation in operations:
        examples = EXAMPLES if time.monotonic() - started < BUDGET_S else 1
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            failures += fuzz_operation(operation, mode, examples, real, lambda: session_token(services, alice.id))

    assert not failures, f"{len(failures)} bad answers:\n" + "\n".join(failures[:20])
    assert len(operations) >= 50  # the whole API was fuzzed, not an empty schema


INTEGERS = (2**70, -(2**70), 2**63, -1, 0)
NUMBERS = ("1e308", "-1e308", "nan", "inf", "-0")
STRINGS = ("x" * 5000, "\x00", "../../etc/passwd", "%2e%2e%2f", "😀", " ", "mdl_' OR '1'='1")
DATES = ("9999-12-31T23:59:59", "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", "1970-01-01")


def extreme_values(schema: dict) -> tuple:
    """Values at and past the edges for a parameter's JSON schema (first non-null type of an anyOf)."""
    options = schema.get("anyOf", [schema])
    kind = next((option for option in options if option.get("type") != "null"), {})
    if kind.get("format") == "date-time":
        return DATES
    return {"integer": INTEGERS, "number": NUMBERS, "string": STRINGS}.get(kind.get("type", ""), ())


def test_extreme_parameter_values_are_refused_cleanly(services: Services, quiet_server_log: None) -> None:
    """Deterministic edges the random search finds only by luck (a 2**70 offset was a 500): every query and
    path parameter of every operation, one at a time, the others filled with real ids."""
    app = create_api(services, FakeClassifier())
    with api_client(services) as client:
        alice = create_account(services, "alice")
        real = plant(services, client, alice)
    failures: list[str] = []
    tried = 0
    with TestClient(app, raise_server_exceptions=False) as raw:
        for path, operations in app.openapi()["paths"].items():
            for method, operation in operations.items():
                parameters = [p for p in operation.get("parameters", []) if p["in"] in ("query", "path")]
                defaults = {p["name"]: getattr(real, p["name"], "x") for p in parameters if p["in"] == "path"}
                for parameter in parameters:
                    for value in extreme_values(parameter.get("schema", {})):
                        filled = {**defaults, **({parameter["name"]: value} if parameter["in"] == "path" else {})}
                        url = path.format(**{name: quote(str(v), safe="") for name, v in filled.items()})
                        params = {parameter["name"]: str(value)} if parameter["in"] == "query" else {}
                        bearer = {"Authorization": f"Bearer {session_token(services, alice.id)}"}
                        response = raw.request(method.upper(), url, params=params, headers=bearer)
                        tried += 1
                        if response.status_code >= 500:
                            failures.append(f"{response.status_code} {method.upper()} {url} {params}"[:300])
                        elif response.status_code >= 400:
                            assert response.headers["content-type"].startswith("application/problem+json"), url

    assert not failures, f"{len(failures)} server errors:\n" + "\n".join(failures[:30])
    assert tried > 200


@pytest.mark.parametrize(
    ("since", "until", "count"),
    [
        pytest.param("0001-01-01T00:00:00+14:00", None, 1, id="since-before-year-1"),
        pytest.param(None, "9999-12-31T23:59:59-14:00", 1, id="until-after-year-9999"),
        pytest.param("9999-12-31T23:59:59-14:00", None, 0, id="since-after-year-9999"),
    ],
)
def test_times_past_the_calendar_filter_as_far_as_time_goes(
    client: TestClient, services: Services, alice: Account, since: str | None, until: str | None, count: int
) -> None:
    plant(services, client, alice)
    params = {key: value for key, value in (("since", since), ("until", until)) if value}

    response = client.get("/v1/tasks", params=params, headers=alice.headers)

    assert response.status_code == 200, response.text
    assert response.json()["count"] == count
