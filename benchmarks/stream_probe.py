"""When each token was made, seen from the process that holds vLLM's AsyncLLM.

`install(path)` wraps vLLM's `OutputProcessor.process_outputs` (the engine-core outputs' way
into every AsyncLLM: our server's, vLLM's server's and the engine alone's): for each request
that got new tokens in a step it appends one line to `path`,

    <request id> <new tokens> <made> <received>

the request id as its caller named it (vLLM's server appends nothing the client cannot see:
the external id), `made` the engine core's own timestamp of the step and `received` when this
process started processing it, both `time.monotonic()` (on Linux one clock for every process of
the machine, so a client's arrival times compare with them). One `write` per step.

As a launcher, `python -m benchmarks.stream_probe LOG MODULE [ARGS...]` runs
`python -m MODULE ARGS...` with the probe installed (benchmarks.stream_timing starts both
servers this way).
"""

from __future__ import annotations

import os
import runpy
import sys
import time
from typing import Any


def install(path: str) -> None:
    from vllm.v1.engine import EngineCoreOutputs
    from vllm.v1.engine.output_processor import OutputProcessor
    from vllm.v1.serial_utils import MsgpackDecoder

    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    original = OutputProcessor.process_outputs
    original_decode = MsgpackDecoder.decode
    decoded: dict[float, float] = {}  # a step's engine-core timestamp -> when it was decoded

    def decode(self: Any, *args: Any, **kwargs: Any) -> Any:
        result = original_decode(self, *args, **kwargs)
        if isinstance(result, EngineCoreOutputs) and result.outputs:
            decoded[result.timestamp] = time.monotonic()
        return result

    def process_outputs(
        self: Any,
        engine_core_outputs: list[Any],
        engine_core_timestamp: float | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> Any:
        received = time.monotonic()
        made = engine_core_timestamp or received
        arrived = decoded.pop(made, received)
        lines = []
        for output in engine_core_outputs:
            if output.new_token_ids:
                state = self.request_states.get(output.request_id)
                name = state.external_req_id if state is not None else output.request_id
                lines.append(
                    f"{name} {len(output.new_token_ids)} {made:.6f} {arrived:.6f} {received:.6f}\n"
                )
        if lines:
            os.write(fd, "".join(lines).encode())
        return original(self, engine_core_outputs, engine_core_timestamp, *args, **kwargs)

    OutputProcessor.process_outputs = process_outputs  # type: ignore[method-assign]
    MsgpackDecoder.decode = decode  # type: ignore[method-assign]


def read_log(path: str) -> dict[str, list[tuple[int, float, float, float]]]:
    """request id -> its steps in order: (new tokens, made, decoded, processed)."""
    steps: dict[str, list[tuple[int, float, float, float]]] = {}
    try:
        with open(path) as file:
            for line in file:
                name, tokens, *times = line.split()
                made, decoded, processed = map(float, times)
                steps.setdefault(name, []).append((int(tokens), made, decoded, processed))
    except FileNotFoundError:
        pass
    return steps


def main(argv: list[str]) -> None:
    if len(argv) < 2:
        raise SystemExit("usage: python -m benchmarks.stream_probe LOG MODULE [ARGS...]")
    log, module, *args = argv
    install(log)
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main(sys.argv[1:])
