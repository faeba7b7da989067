"""Background jobs on Ray: a detached launcher actor owns each job's driver task, which fans work out to tasks."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterator
from typing import Any

import ray

from cluster.blobs import open_blob_store
from cluster.catalog import jobs as catalog_jobs
from cluster.catalog.actor import RayCatalog, get_catalog_actor
from cluster.catalog.client import Catalog
from cluster.config import Settings
from cluster.importer import ImportRequest, run_import
from cluster.resources import on_the_head, on_this_node, train_task_options
from pipelines.errors import ClassiflyError

logger = logging.getLogger("classifly.jobs")

JOBS_ACTOR = "classifly-jobs"
UPDATER_THREADS = 4  # model updates of different models running at once in the warm updater
SERVE_APP_NAME = "classifly"  # serve.app.APP_NAME: batch jobs classify through its deployments


def finish_whatever_happens(
    catalog: Catalog, job_id: str, work: Callable[[], dict[str, Any]], *, kind: str, unexpected: str
) -> None:
    """Run a started job's `work` and record how it ended: its result (with a `summary`), the problem it raised
    in words, or `unexpected` (a sentence for the user; the traceback goes to the log) for anything else."""
    try:
        result = work()
        catalog.call_sync(catalog_jobs.finish_job, job_id, status="succeeded", message=result["summary"], result=result)
    except ClassiflyError as error:
        catalog.call_sync(
            catalog_jobs.finish_job,
            job_id,
            status="failed",
            message=error.detail,
            error={"code": error.code, "title": error.title, "detail": error.detail},
        )
    except Exception as error:
        logger.exception("%s job %s failed", kind, job_id)
        catalog.call_sync(
            catalog_jobs.finish_job,
            job_id,
            status="failed",
            message=unexpected,
            error={"code": "internal", "detail": unexpected, "type": type(error).__name__},
        )


def ray_map(parallelism: int, cpus_per_task: float = 0.5) -> Callable[[Callable[[Any], Any], list[Any]], Iterator[Any]]:
    """A mapper running `fn` over items as Ray tasks, at most `parallelism` at once, yielding as they finish.

    Tasks ask for a fraction of a CPU: the API replica holds a fraction too, and whole-CPU tasks would
    then run one at a time on a 2-core machine.
    """

    def mapper(fn: Callable[[Any], Any], items: list[Any]) -> Iterator[Any]:
        remote_fn = ray.remote(max_retries=2, **train_task_options(cpus_per_task))(fn)
        queue = iter(items)
        pending = [remote_fn.remote(item) for item in itertools.islice(queue, parallelism)]
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            for item in itertools.islice(queue, len(ready)):
                pending.append(remote_fn.remote(item))
            yield ray.get(ready[0])

    return mapper


def _import_driver(request: ImportRequest, namespace: str, settings_json: str = "") -> None:
    catalog = RayCatalog(get_catalog_actor(namespace))

    def update_trained_model(done: ImportRequest) -> str | None:
        """A zip into a trained model (new class folders, more pictures): a new version follows in seconds."""
        from cluster.catalog import jobs as catalog_jobs
        from cluster.catalog import models as catalog_models

        if not settings_json:
            return None
        model = catalog.call_sync(catalog_models.get_owned_model, done.owner_id, done.model_id)
        if model.active_version is None:
            return None
        job, created = catalog.call_sync(
            catalog_jobs.request_expansion, done.owner_id, done.model_id, f"pictures imported by job {done.job_id}"
        )
        if created:
            handle = ray.get_actor(JOBS_ACTOR, namespace=namespace)
            ray.get(handle.submit_expansion.remote(job.id, done.model_id, settings_json))
        return f"/v1/jobs/{job.id}"

    run_import(
        request,
        catalog,
        open_blob_store(request.blob_root),
        ray_map(request.parallelism),
        on_new_pictures=update_trained_model,
    )


class JobsActor:
    """Owns the driver task of every running job, so jobs outlive the API replica that started them."""

    def __init__(self, namespace: str):
        self.namespace = namespace
        self.running: dict[str, ray.ObjectRef] = {}
        self.expansions: dict[str, ray.ObjectRef] = {}  # model id -> its latest expansion driver
        self.updater = None  # the warm model-update process, started with this actor (see cluster.expansion)
        self._start_updater()
        self.driver = ray.remote(num_cpus=0, max_retries=0)(_import_driver)

    def submit_import(self, request: ImportRequest, settings_json: str = "") -> None:
        self._prune()
        # Drivers stay on this actor's node (never on a user's runner); their work asks for classifly_train.
        driver = self.driver.options(**on_this_node())
        self.running[request.job_id] = driver.remote(request, self.namespace, settings_json)

    def submit_training(self, run_id: str, settings_json: str) -> None:
        from cluster.training import training_driver

        self._prune()
        driver = ray.remote(num_cpus=0, max_retries=0)(training_driver).options(
            name=f"training {run_id}", **on_this_node()
        )
        self.running[run_id] = driver.remote(run_id, settings_json)

    def submit_expansion(self, job_id: str, model_id: str, settings_json: str) -> None:
        """Run an expansion job after the model's previous one (expansions of one model never overlap)."""
        self._prune()
        previous = self.expansions.get(model_id)
        after = [previous] if previous is not None and previous in self.running.values() else []
        ref = self._start_updater().run.remote(job_id, settings_json, after)
        self.running[job_id] = ref
        self.expansions[model_id] = ref

    def _start_updater(self):
        """The model updater (restarted by Ray if its process dies; an update it was running is then marked
        interrupted like any job whose driver died)."""
        from cluster.expansion import Updater

        if self.updater is None:
            options = {"num_cpus": 0, "max_concurrency": UPDATER_THREADS, "max_restarts": -1}
            self.updater = ray.remote(Updater).options(**options, **on_this_node()).remote()  # never on a runner
        return self.updater

    def submit_classify_batch(self, job_id: str, settings_json: str, app_name: str) -> None:
        from cluster.batch import batch_driver

        self._prune()
        driver = ray.remote(num_cpus=0, max_retries=0)(batch_driver).options(
            name=f"classify-batch {job_id}", **on_this_node()
        )
        self.running[job_id] = driver.remote(job_id, settings_json, app_name)

    def running_jobs(self) -> list[str]:
        self._prune()
        return list(self.running)

    def _prune(self) -> None:
        if not self.running:
            return
        done, _ = ray.wait(list(self.running.values()), num_returns=len(self.running), timeout=0)
        finished = set(done)
        self.running = {job: ref for job, ref in self.running.items() if ref not in finished}


def start_jobs_actor(namespace: str) -> ray.actor.ActorHandle:
    """Get or start the detached jobs actor."""
    handle = (
        ray.remote(JobsActor)
        .options(
            name=JOBS_ACTOR, namespace=namespace, lifetime="detached", get_if_exists=True, num_cpus=0, **on_the_head()
        )
        .remote(namespace)
    )
    ray.get(handle.running_jobs.remote())
    return handle


class RayJobLauncher:
    """The API's way to start jobs on the cluster."""

    def __init__(self, handle: ray.actor.ActorHandle, settings_json: str):
        self.handle = handle
        self.settings_json = settings_json

    def submit_import(self, request: ImportRequest) -> None:
        ray.get(self.handle.submit_import.remote(request, self.settings_json))

    def submit_training(self, run_id: str) -> None:
        ray.get(self.handle.submit_training.remote(run_id, self.settings_json))

    def submit_expansion(self, job_id: str, model_id: str) -> None:
        ray.get(self.handle.submit_expansion.remote(job_id, model_id, self.settings_json))

    def submit_classify_batch(self, job_id: str) -> None:
        ray.get(self.handle.submit_classify_batch.remote(job_id, self.settings_json, SERVE_APP_NAME))

    def export(self, artifact_uri: str, fmt: str) -> str:
        """Build (or find) the export file on a Ray task with TensorFlow; blocks until it is stored."""
        from cluster.artifacts import export_artifact

        settings = Settings.model_validate_json(self.settings_json)
        task = ray.remote(num_cpus=1, max_retries=0)(export_artifact)
        return ray.get(task.remote(settings.blob_root, artifact_uri, fmt, str(settings.data_dir / "backbones")))
