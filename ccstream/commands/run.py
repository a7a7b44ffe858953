"""Run the source connector and the dedup worker in one process, for small deployments.

The Faust worker owns the event loop and the signals; the connector runs as a task on the same
loop. One graceful shutdown covers both: on SIGTERM/SIGINT the connector stops first (sockets
closed with 1000, producer flushed, cursors committed), then the dedup worker commits its last
transaction and leaves its group, all within [connector] grace_period_s. A second signal exits at
once. If the connector ends by itself (bad credentials, a missing permission, every breaker
open), the worker is stopped too and the exit code is the connector's. One /metrics endpoint
([metrics] port) serves both, since they share ccstream's metrics registry.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from typing import Any

from ccstream import logs
from ccstream.config import Config, load

log = logs.get_logger("ccstream.run")
# seconds kept for the Faust worker's own stop (last transaction, leaving the group)
FAUST_STOP_S = 3.0


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, metavar="FILE", help="TOML configuration")


def main(args: argparse.Namespace) -> int:
    config = load(args.config)
    from pipeline.dedup.worker import start

    log.info("run.starting", streams=len(config.streams), app_id=config.dedup.app_id)
    # the connector's runner serves the metrics endpoint (both halves' metrics are in it)
    code, started = start(config, worker_class=_combined_worker_class(), serve_metrics=False,
                          run_config=config)
    worker: Any = started
    final = worker.connector_code if worker.connector_code else code
    if worker.connector_message:
        print(f"ccstream run: {worker.connector_message}", file=sys.stderr)
    log.info("run.stopped", exit_code=final)
    return final


def _combined_worker_class() -> Any:
    """The shared faust worker with the connector as a task; built lazily so faust loads only
    here."""
    from connectors.runner import Runner
    from pipeline.faust_compat import Worker

    class CombinedWorker(Worker):
        def __init__(self, app: Any, run_config: Config, **kwargs: Any) -> None:
            super().__init__(app, **kwargs)
            self.config = run_config
            self.runner: Runner | None = None  # made on the loop: aiokafka binds to it
            # the connector gets the grace period less what Faust needs to commit and leave
            self.connector_grace_s = max(1.0, run_config.connector.grace_period_s - FAUST_STOP_S)
            self.connector_code = 0
            self.connector_message = ""
            self.signals = 0
            self._connector: asyncio.Task[Any] | None = None

        async def on_first_start(self) -> None:
            await super().on_first_start()  # installs mode's SIGTERM/SIGINT handlers
            self.runner = Runner(self.config)
            self._connector = asyncio.ensure_future(self.runner.run(), loop=self.loop)
            self._connector.add_done_callback(self._connector_done)

        def _connector_done(self, task: asyncio.Task[Any]) -> None:
            if task.cancelled():
                return
            error = task.exception()
            if error is not None:
                self.connector_code, self.connector_message = 1, f"connector failed: {error!r}"
            else:
                outcome = task.result()
                self.connector_code, self.connector_message = outcome.code, outcome.message
            # a connector that ended by itself takes the worker down with it: nothing hangs
            self.shutdown(signal.SIGTERM)

        def on_signal(self, sig: signal.Signals) -> None:
            self.signals += 1
            if self.signals > 1:
                # a second signal while stopping: the operator insists (contract: exit at once;
                # cursors and offsets stay at their last commit, so nothing is lost, only replayed)
                log.warning("run.forced_exit", signal=sig.name)
                os._exit(128 + sig.value)
            log.info("run.stopping", signal=sig.name)
            self.shutdown(sig)

        async def on_stop(self) -> None:
            # the connector first: its sockets close and its cursors commit before Faust stops
            if self.runner is not None and self._connector is not None \
                    and not self._connector.done():
                self.runner.request_stop()
                try:
                    await asyncio.wait_for(asyncio.shield(self._connector),
                                           self.connector_grace_s)
                except TimeoutError:
                    log.warning("run.connector_shutdown_timeout", grace_s=self.connector_grace_s)
            await super().on_stop()

    return CombinedWorker
