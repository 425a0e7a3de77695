"""The worker process: a Faust app as the shell (``satpulse worker``, logging, signals, the web server with
``GET /metrics``) around :class:`streams.pipeline.Pipeline`, which consumes, cleans, windows and stores in
batches and publishes window results every second (see its docstring for the contracts and for why the hot
path is not a Faust agent).
"""

from __future__ import annotations

import gc
from typing import Any

import faust
import mode
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from satpulse import metrics
from satpulse.settings import get_settings
from streams.pipeline import Pipeline

settings = get_settings()
# Window state is a large heap of small long-lived objects; with the default thresholds the collector walks it
# again and again (half of the window stage's CPU in profiles). Reference counting still frees everything
# acyclic at once; this only makes the cycle collector run less often.
gc.set_threshold(100_000, 50, 1000)
(settings.work_dir / "faust").mkdir(parents=True, exist_ok=True)  # Faust's datadir (it makes one level only)

# The shell subscribes to nothing, so its own consumer never joins a group; the pipeline's consumer group is
# the worker id. The app id differs from it so that the two can never meet in one group.
app = faust.App(
    f"{settings.worker_id}-shell",
    broker=f"kafka://{settings.kafka_bootstrap}",
    web_host="127.0.0.1" if settings.kafka_bootstrap.startswith("127.") else "0.0.0.0",
    web_port=settings.worker_web_port,
    web_enabled=True,
    store="memory://",
    datadir=str(settings.work_dir / "faust" / settings.worker_id),
)
pipeline = Pipeline(settings)


@app.service
class PipelineService(mode.Service):
    """Starts the pipeline with the worker and stops it (leaving the consumer group) on shutdown."""

    async def on_start(self) -> None:
        await pipeline.start()

    async def on_stop(self) -> None:
        await pipeline.stop()

    @mode.Service.task
    async def _consume(self) -> None:
        await pipeline.run()

    @mode.Service.task
    async def _advance_watermark(self) -> None:
        await pipeline.tick_forever(settings.publish_interval_seconds)


@app.page("/metrics")
async def prometheus_metrics(web: Any, request: Any) -> Any:
    return web.bytes(generate_latest(metrics.REGISTRY), content_type=CONTENT_TYPE_LATEST.split(";")[0])
