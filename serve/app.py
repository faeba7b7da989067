"""The Ray Serve application: `build_app` wires every deployment; nothing else calls `.bind()`.

Ingress (FastAPI) ──► Extractor (shared backbones, batched) ──► features
        │         └─► Heads (numpy heads, LRU by version)   ──► probabilities
        └───────────► FullModels (whole Keras models, multiplexed by artifact, batched)
"""

from __future__ import annotations

from dataclasses import dataclass

from ray import serve
from ray.serve import Application

from cluster.blobs import open_blob_store
from cluster.catalog.actor import RayCatalog, start_catalog_actor
from cluster.config import Settings
from cluster.jobs import RayJobLauncher, start_jobs_actor
from cluster.resources import serve_actor_options
from cluster.services import Services
from serve.api import create_api
from serve.classifier import ServeClassifier
from serve.deployments import Extractor, FullModels, Heads

APP_NAME = "classifly"


@dataclass(frozen=True)
class AppArgs:
    settings: Settings


@serve.ingress()
class Ingress:
    """The REST API: stateless, so it can run as many replicas as needed."""

    def __init__(self, settings: Settings, extractor, heads, full_models):
        catalog = start_catalog_actor(settings.catalog_file, settings.ray_namespace)
        jobs = start_jobs_actor(settings.ray_namespace)
        blobs = open_blob_store(settings.blob_root)
        self.services = Services(
            settings, RayCatalog(catalog), blobs, RayJobLauncher(jobs, settings.model_dump_json()), _cluster_cpus()
        )
        self.classifier = ServeClassifier(blobs, extractor, heads, full_models)

    def __serve_build_asgi_app__(self):
        return create_api(self.services, self.classifier)


def _cluster_cpus() -> int:
    import ray

    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def build_app(args: AppArgs) -> Application:
    """The whole online graph for these settings."""
    settings = args.settings
    # Serve's default of 5 ongoing requests queues requests and caps @serve.batch at 5; access logs cost about
    # half the throughput on 2 cores (see STACK-NOTES.md).
    common = {"logging_config": {"enable_access_log": False}}
    batching = {"max_ongoing_requests": settings.serve_max_ongoing_requests, **common}
    backbone_dir = str(settings.data_dir / "backbones")
    extractor = serve.deployment(
        Extractor, name="Extractor", ray_actor_options=serve_actor_options(settings.extractor_cpus), **batching
    ).bind(backbone_dir, settings.serve_threads, settings.serve_batch_size, settings.serve_batch_wait_s)
    heads = serve.deployment(
        Heads, name="Heads", ray_actor_options=serve_actor_options(settings.heads_cpus), **batching
    ).bind(settings.blob_root, settings.head_cache_size)
    full_models = serve.deployment(
        FullModels, name="FullModels", ray_actor_options=serve_actor_options(settings.full_model_cpus), **batching
    ).bind(
        settings.blob_root, backbone_dir, settings.serve_threads, settings.serve_batch_size, settings.serve_batch_wait_s
    )
    ingress = serve.deployment(
        Ingress,
        name="Ingress",
        num_replicas=settings.ingress_replicas,
        ray_actor_options=serve_actor_options(settings.ingress_cpus),
        max_ongoing_requests=64,
        **common,
    )
    return ingress.bind(settings, extractor, heads, full_models)
