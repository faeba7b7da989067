"""The Ray Serve application: `build_app` wires every deployment; nothing else calls `.bind()`."""

from __future__ import annotations

from dataclasses import dataclass

from ray import serve
from ray.serve import Application

from cluster.blobs import open_blob_store
from cluster.catalog.actor import RayCatalog, start_catalog_actor
from cluster.config import Settings
from cluster.jobs import RayJobLauncher, start_jobs_actor
from cluster.services import Services
from serve.api import create_api

APP_NAME = "classifly"


@dataclass(frozen=True)
class AppArgs:
    settings: Settings


@serve.ingress()
class Ingress:
    """The REST API: stateless, so it can run as many replicas as needed."""

    def __init__(self, settings: Settings):
        catalog = start_catalog_actor(settings.catalog_file, settings.ray_namespace)
        jobs = start_jobs_actor(settings.ray_namespace)
        blobs = open_blob_store(settings.blob_root)
        self.services = Services(
            settings, RayCatalog(catalog), blobs, RayJobLauncher(jobs, settings.model_dump_json()), _cluster_cpus()
        )

    def __serve_build_asgi_app__(self):
        return create_api(self.services)


def _cluster_cpus() -> int:
    import ray

    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def build_app(args: AppArgs) -> Application:
    """The whole online graph for these settings."""
    settings = args.settings
    ingress = serve.deployment(
        Ingress,
        name="Ingress",
        num_replicas=settings.ingress_replicas,
        ray_actor_options={"num_cpus": settings.ingress_cpus},
        # Serve's default of 5 queues requests and starves batching on 2 cores (see STACK-NOTES.md).
        max_ongoing_requests=64,
        logging_config={"enable_access_log": False},
    )
    return ingress.bind(settings)
