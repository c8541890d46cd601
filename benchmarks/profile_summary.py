"""Where an API process spends its CPU: a py-spy raw profile, grouped by component.

    pip install py-spy
    py-spy record --threads -r 50 -f raw -o profile.txt -p API_PID -d 40 &
    python -m benchmarks.loadgen --url http://127.0.0.1:8000 -c 16 -n 600 --image 512x512:jpeg
    python -m benchmarks.profile_summary profile.txt

Samples of threads waiting (an idle pool worker, the event loop in epoll) are left out; each
remaining sample is charged to the innermost frame that names a component, so a socket write
under the telemetry middleware counts as HTTP, not telemetry.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from collections.abc import Iterable, Sequence

# Leaf frames of threads that wait rather than work.
IDLE_LEAVES = re.compile(
    r"^(_worker \(concurrent/futures/thread\.py:81\)|_PollLikeSelector\.select|"
    r"GarbageCollectorThread\.run|Runner\.run \(asyncio/runners\.py:118\)|wait \(threading|"
    r"_wait_for_tstate_lock|get \(queue\.py)"
)

# (component, pattern on one frame), innermost match wins; the order breaks ties in a frame.
COMPONENTS: tuple[tuple[str, str], ...] = (
    (
        "vLLM input processing: HF image processor",
        r"image_processing_|TorchvisionBackend|BaseImageProcessor|processing_qwen2_vl|"
        r"pil_to_tensor|_call_hf_processor",
    ),
    ("vLLM input processing: hashing", r"hasher\.py|blake3"),
    ("vLLM input processing: other", r"input_processor|vllm/multimodal|vllm/renderers|vllm/inputs"),
    ("image decode (JPEG/PNG/DICOM)", r"ImageFile\.load|PngImagePlugin|JpegImagePlugin|dicom"),
    ("image resize (PIL)", r"Image\.resize|to_rgb_resized"),
    ("prepared-image cache", r"image_cache\.py"),
    ("base64", r"b64decode|decode_data_url"),
    ("image probe / convert", r"probe_image|decode_image|_header|to_rgb|stretch_to_8bit|media\.py"),
    ("chat template / tokenizer", r"apply_chat_template|tokeniz|_text_tokens"),
    ("vLLM output handling (detokenize)", r"output_processor|detokenizer|OutputProcessor"),
    ("vLLM engine client (ZeroMQ, msgpack)", r"serial_utils|zmq|msgpack|core_client"),
    ("SSE and chat service", r"services/chat\.py|services/generation\.py|vllm_engine\.py"),
    ("request validation (JSON, pydantic)", r"pydantic|json/|lingshu_server/protocol/"),
    ("metrics, logs, telemetry", r"prometheus|metrics\.py|logs\.py|logging/|telemetry"),
    ("HTTP (uvicorn, starlette, socket writes)", r"uvicorn|httptools|starlette|fastapi|anyio"),
    ("prompt building", r"services/chat_prompt\.py"),
    ("asyncio", r"asyncio"),
)


def parse(lines: Iterable[str]) -> Iterable[tuple[list[str], int]]:
    """(frames outermost first, thread first; sample count) per line of py-spy's raw format."""
    for line in lines:
        stack, _, count = line.rstrip("\n").rpartition(" ")
        if stack and count.isdigit():
            yield stack.split(";"), int(count)


def thread_name(frame: str) -> str:
    """'thread (0x7f..): image_1' -> 'image'; pool workers lose their numbers."""
    name = frame.split(":", 1)[-1].strip()
    return re.sub(r"[-_]\d+(_\d+)?$", "", name)


def component(frames: Sequence[str]) -> str:
    for frame in reversed(frames):
        for name, pattern in COMPONENTS:
            if re.search(pattern, frame):
                return name
    return "other"


def summarize(lines: Iterable[str]) -> tuple[int, Counter[str], Counter[str]]:
    """(working samples, samples by thread, samples by component)."""
    threads: Counter[str] = Counter()
    components: Counter[str] = Counter()
    total = 0
    for frames, count in parse(lines):
        if len(frames) < 2 or IDLE_LEAVES.match(frames[-1]):
            continue
        total += count
        threads[thread_name(frames[0])] += count
        components[component(frames[1:])] += count
    return total, threads, components


def render(total: int, threads: Counter[str], components: Counter[str]) -> str:
    lines = [f"working samples: {total}", "", "by thread:"]
    lines += [f"  {100 * n / total:5.1f}%  {name}" for name, n in threads.most_common()]
    lines += ["", "by component:"]
    lines += [f"  {100 * n / total:5.1f}%  {name}" for name, n in components.most_common()]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile_summary")
    parser.add_argument("profile", help="py-spy record -f raw output (with --threads)")
    args = parser.parse_args(argv)
    with open(args.profile) as file:
        total, threads, components = summarize(file)
    if not total:
        sys.stderr.write("no working samples in the profile\n")
        return 1
    sys.stdout.write(render(total, threads, components))
    return 0


if __name__ == "__main__":
    sys.exit(main())
