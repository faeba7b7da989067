"""The Serve application as an import path, for `serve run serve.entrypoint:app` and KubeRay's RayService
(docs/CLUSTER.md); settings come from the environment (CLASSIFLY_*)."""

from __future__ import annotations

from cluster.config import get_settings
from serve.app import AppArgs, build_app

app = build_app(AppArgs(get_settings()))
