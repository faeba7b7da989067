"""The serving benchmark's baselines, each in a process of its own (``python -m bench.serving_plain ...``):

- ``raw``: the published model in-process, no HTTP: single-picture latency and batched throughput of the
  compiled graph (the physical limit of this machine), printed as one JSON line;
- ``serve``: what a user would write instead of Classifly: one FastAPI + uvicorn process that decodes each
  upload with the same preprocessing and calls the model per request, either ``model.predict`` (``--mode
  predict``) or the compiled ``tf.function`` (``--mode compiled``).

Both load the model exactly as the platform's replicas do (cluster/serving.py: the whole Keras model, or the
shared backbone's feature model plus the version's numpy head), from the platform's blob store.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from fastapi import FastAPI, File, UploadFile  # at module level: the route's annotations name them

MAX_PIXELS = 100_000_000  # the platform's default cap on decoded pixels (Settings.max_image_pixels)


@dataclass
class Loaded:
    policy: object  # pipelines.images.PreprocessingPolicy
    class_names: tuple[str, ...]
    compiled: Callable[[np.ndarray], np.ndarray]  # uint8 pictures -> probabilities, tf.function graphs
    keras_predict: Callable[[np.ndarray], np.ndarray]  # the same through keras Model.predict


def load(blob_root: str, artifact_uri: str, backbone_dir: str, threads: int) -> Loaded:
    from cluster.blobs import open_blob_store
    from cluster.serving import HeadRef, load_extractor, load_full_model, load_head, serving_plan, tensorflow_threads

    tensorflow_threads(threads)
    blobs = open_blob_store(blob_root)
    plan = serving_plan(blobs, artifact_uri)
    if plan.extractor is None:
        whole = load_full_model(blobs, artifact_uri, backbone_dir)
        return Loaded(plan.policy, plan.class_names, whole.extract, lambda x: _first(whole.model.predict(x, verbose=0)))
    extractor = load_extractor(plan.extractor, backbone_dir)
    head = load_head(blobs, HeadRef("bench", 1, artifact_uri, plan.head_file or ""))

    def compiled(images: np.ndarray) -> np.ndarray:
        mirrored = extractor.extract(images, mirrored=True) if plan.mirror else None
        return head.predict_proba_views(extractor.extract(images), mirrored)

    def keras_predict(images: np.ndarray) -> np.ndarray:
        features = _first(extractor.model.predict(images, verbose=0))
        mirrored = _first(extractor.model.predict(images[:, :, ::-1], verbose=0)) if plan.mirror else None
        return head.predict_proba_views(features, mirrored)

    return Loaded(plan.policy, plan.class_names, compiled, keras_predict)


def _first(outputs) -> np.ndarray:
    return np.asarray(outputs[0] if isinstance(outputs, list | tuple) else outputs)


def decode(loaded: Loaded, data: bytes, name: str = "upload") -> np.ndarray:
    from pipelines.images import load_for_model

    return load_for_model(data, name, loaded.policy, max_pixels=MAX_PIXELS)


def measure_raw(loaded: Loaded, pictures: list[bytes], batch: int, seconds: float) -> dict[str, float]:
    """Median single-picture latency (compiled, decoding excluded), batched pictures/s, and decoding ms."""
    started = time.perf_counter()
    images = [decode(loaded, data) for data in pictures]
    decode_ms = (time.perf_counter() - started) * 1000 / len(pictures)
    for image in images[:5]:
        loaded.compiled(image[None])
    single = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(single) < 10:
        image = images[len(single) % len(images)]
        begin = time.perf_counter()
        loaded.compiled(image[None])
        single.append((time.perf_counter() - begin) * 1000)
    stack = np.stack([images[i % len(images)] for i in range(batch)])
    loaded.compiled(stack)
    done, begin = 0, time.perf_counter()
    while time.perf_counter() - begin < seconds or done < 2 * batch:
        loaded.compiled(stack)
        done += batch
    batched = done / (time.perf_counter() - begin)
    return {
        "single_ms": statistics.median(single),
        "single_p90_ms": sorted(single)[int(0.9 * (len(single) - 1))],
        "batched_ips": batched,
        "batch": batch,
        "decode_ms": decode_ms,
    }


def build_server(loaded: Loaded, mode: str) -> FastAPI:
    predict = loaded.compiled if mode == "compiled" else loaded.keras_predict
    app = FastAPI()

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/classify")
    async def classify(file: UploadFile = File(...)) -> dict[str, object]:  # noqa: B008 - FastAPI's idiom
        image = decode(loaded, await file.read(), file.filename or "upload")
        probabilities = predict(image[None])[0]
        best = int(np.argmax(probabilities))
        return {"label": loaded.class_names[best], "confidence": float(probabilities[best])}

    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.serving_plain")
    parser.add_argument("what", choices=("raw", "serve"))
    parser.add_argument("--blob-root", required=True)
    parser.add_argument("--artifact", required=True)
    parser.add_argument("--backbones", required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--mode", choices=("predict", "compiled"), default="compiled")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--pictures", help="raw: a .npz-free folder of picture files to decode and run")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args(argv)
    loaded = load(args.blob_root, args.artifact, args.backbones, args.threads)
    if args.what == "raw":
        from pathlib import Path

        pictures = [path.read_bytes() for path in sorted(Path(args.pictures).iterdir())]
        print(json.dumps(measure_raw(loaded, pictures, args.batch, args.seconds)), flush=True)
        return 0
    import uvicorn

    # Warm both paths once so the first request does not pay the tracing.
    warm = np.zeros((1, *_input_shape(loaded)), np.uint8)
    loaded.compiled(warm)
    loaded.keras_predict(warm)
    uvicorn.run(
        build_server(loaded, args.mode), host="127.0.0.1", port=args.port, access_log=False, log_level="warning"
    )
    return 0


def _input_shape(loaded: Loaded) -> tuple[int, ...]:
    policy = loaded.policy
    channels = 1 if getattr(policy, "color", "rgb") == "gray" else 3
    return (policy.image_size, policy.image_size, channels)


if __name__ == "__main__":
    sys.exit(main())
