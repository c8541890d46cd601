"""One real vLLM engine behind several front ends, in one process: the test suite's engine.

Most test servers differ only in front-end flags (keys, limits, PACS, image sources), while a
vLLM engine takes about 40 s and a few GB to start. This process starts the engine once and
serves each front end on its own port with its own settings, exactly as `lingshu-server demo
ARGS` would (the same `http_server`: middleware, guarded HTTP protocol, drain), all sharing the
engine. The test process adds and removes front ends by writing JSON lines to its stdin:

    {"op": "add", "name": "secured", "args": ["--api-keys", "..."], "port": 40123}
    {"op": "remove", "name": "secured"}      # stop it now
    {"op": "drain", "name": "secured"}       # what SIGTERM does to a server process

A front end's engine arguments must equal the engine's (its per-prompt image and video limits
may be lower). When the engine dies every front end exits and so does the process, non-zero, as
a server would; SIGTERM or the end of stdin stops everything and exits 0.

    python -m tests.utils.shared_engine [ENGINE ARGS...]   (`lingshu-server demo` flags)
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
import threading
from typing import Any

from lingshu_server.core.image_budget import PixelBudget, checkpoint_budget, server_budget
from lingshu_server.core.logs import configure_logging
from lingshu_server.core.settings import Settings
from lingshu_server.engine.engine_args import engine_kwargs
from lingshu_server.engine.interface import Engine
from lingshu_server.engine.lora import LoraPlan, plan_adapters
from lingshu_server.engine.model_check import check_supported_model
from lingshu_server.engine.vllm_engine import VllmEngine
from lingshu_server.serve import DrainingServer, http_server
from tests.utils.in_process import demo_command_settings

logger = logging.getLogger("tests.shared_engine")
MM_LIMITS = "limit_mm_per_prompt"


def _engine_inputs(settings: Settings) -> tuple[PixelBudget, LoraPlan]:
    """The image budget and adapters the app would build the engine with (app.load_services)."""
    lora = plan_adapters(settings, check_supported_model(settings.model))
    budget, _ = server_budget(
        settings.min_pixels, settings.max_pixels, checkpoint_budget(settings.model)
    )
    return budget, lora


def _kwargs(settings: Settings) -> dict[str, Any]:
    return engine_kwargs(settings, *_engine_inputs(settings))


class _Shared:
    """The engine for every front end; a front end stopping does not stop it."""

    def __init__(self, engine: Engine):
        self._engine = engine

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)

    def shutdown(self) -> None:
        return None  # the process shuts the engine down when it ends


class SharedEngineFactory:
    """An `EngineFactory` that builds the engine once and hands every front end the same one."""

    def __init__(self, base: Settings):
        self.base = base
        self.base_inputs = _engine_inputs(base)
        self.base_kwargs = engine_kwargs(base, *self.base_inputs)
        self._lock = threading.Lock()
        self.engine: VllmEngine | None = None

    def check(self, settings: Settings) -> None:
        """Refuse a front end whose engine would differ from the shared one."""
        theirs = _kwargs(settings)
        ours = self.base_kwargs
        differ = sorted(
            key
            for key in set(theirs) | set(ours)
            if key not in (MM_LIMITS, "served_model_name") and theirs.get(key) != ours.get(key)
        )
        limits, mine = theirs.get(MM_LIMITS, {}), ours.get(MM_LIMITS, {})
        differ += [f"{MM_LIMITS}.{k}" for k, v in limits.items() if v > mine.get(k, 0)]
        if differ:
            raise ValueError(f"engine arguments differ from the shared engine's: {differ}")

    def __call__(self, settings: Settings, image_budget: Any, lora: LoraPlan) -> Engine:
        with self._lock:
            if self.engine is None:
                self.engine = VllmEngine(self.base, *self.base_inputs)
            return _Shared(self.engine)  # type: ignore[return-value]

    @staticmethod
    def metrics_exposition() -> bytes:
        return VllmEngine.metrics_exposition()


class FrontEnds:
    def __init__(self, factory: SharedEngineFactory):
        self.factory = factory
        self.servers: dict[str, DrainingServer] = {}
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.stopping = False
        self.engine_died = False

    def add(self, name: str, args: list[str], port: int) -> None:
        settings = demo_command_settings(*args, "--port", str(port))
        self.factory.check(settings)
        server = http_server(settings, engine_factory=self.factory)
        self.servers[name] = server
        self.tasks[name] = asyncio.ensure_future(self._serve(name, server))

    async def _serve(self, name: str, server: DrainingServer) -> None:
        await server.serve()
        if server.exit_code:
            self.engine_died = True
        logger.info(
            "front end stopped", extra={"fields": {"frontend": name, "exit_code": server.exit_code}}
        )
        if self.servers.get(name) is server:
            del self.servers[name]

    def handle(self, line: str) -> None:
        command = json.loads(line)
        op, name = command["op"], command["name"]
        try:
            if op == "add":
                self.add(name, command["args"], command["port"])
            elif op == "remove" and name in self.servers:
                self.servers[name].should_exit = True
            elif op == "drain" and name in self.servers:
                self.servers[name].handle_exit(signal.SIGTERM, None)
        except Exception as exc:
            logger.error(
                "front end refused",
                extra={"fields": {"frontend": name, "error": f"{type(exc).__name__}: {exc}"}},
            )

    def stop_all(self) -> None:
        self.stopping = True
        for server in self.servers.values():
            server.should_exit = True


async def run(base_args: list[str], commands: asyncio.Queue[str | None]) -> int:
    factory = SharedEngineFactory(demo_command_settings(*base_args))
    fronts = FrontEnds(factory)
    while True:
        try:
            line = await asyncio.wait_for(commands.get(), timeout=0.5)
        except TimeoutError:
            line = ""
        if line is None:
            fronts.stop_all()
            break
        if line:
            fronts.handle(line)
        if fronts.engine_died and not fronts.servers:
            break
    await asyncio.gather(*fronts.tasks.values(), return_exceptions=True)
    if factory.engine is not None:
        factory.engine.shutdown()
    return 1 if fronts.engine_died else 0


def main() -> int:
    """The servers run on an event loop in a second thread, where uvicorn installs no signal
    handlers of its own; this thread turns SIGTERM and the end of stdin into "stop all"."""
    configure_logging("info", "json")
    loop = asyncio.new_event_loop()
    commands: asyncio.Queue[str | None] = asyncio.Queue()
    result: list[int] = []

    def serve() -> None:
        asyncio.set_event_loop(loop)
        result.append(loop.run_until_complete(run(sys.argv[1:], commands)))

    def stop(*_: object) -> None:
        loop.call_soon_threadsafe(commands.put_nowait, None)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    thread = threading.Thread(target=serve, name="front-ends")
    thread.start()

    def read_stdin() -> None:
        for line in sys.stdin:
            if line.strip():
                loop.call_soon_threadsafe(commands.put_nowait, line)
        stop()

    threading.Thread(target=read_stdin, name="commands", daemon=True).start()
    while thread.is_alive():
        thread.join(0.5)  # short joins, so signals are handled promptly
    return result[0] if result else 1


if __name__ == "__main__":
    sys.exit(main())
