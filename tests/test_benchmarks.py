"""The benchmark harness (benchmarks/) cannot rot: a tiny load against the session's server,
the report logic on synthetic results, and the command lines the comparison would start.

Nothing here measures performance: the targets are checked in the benchmark's own output."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import io
import json
import os

import numpy as np
import pytest
from PIL import Image

from benchmarks import compare, loadgen, report, stream_timing
from benchmarks.engine_alone import PromptBuilder, spec_from_dict, spec_to_dict
from benchmarks.images import ct_hounsfield, encode_variant, variant_image
from benchmarks.loadgen import SUMMARY_FIELDS, Bodies, ImageSpec, LoadSpec, run_load
from benchmarks.targets import (
    ENGINE,
    OURS,
    VLLM,
    engine_kwargs,
    ours_command,
    target_env,
    vllm_command,
)
from tests.utils.server import RunningServer
from tests.utils.tiers import api_pid


def _check_summary(summary: dict, requests: int, max_tokens: int) -> None:
    assert set(SUMMARY_FIELDS) <= set(summary)
    assert summary["errors"] == 0, summary["error_samples"]
    assert summary["ok"] == summary["requests"] == requests
    assert summary["requests_per_s"] > 0
    assert 0 < summary["ttft_p50_s"] <= summary["e2e_p50_s"]
    assert summary["ttft_p99_s"] <= summary["e2e_p99_s"]
    assert summary["itl_p50_s"] is None or summary["itl_p50_s"] >= 0
    assert summary["api_cpu_s_per_req"] is not None and summary["api_cpu_s_per_req"] >= 0
    assert summary["completion_tokens_mean"] == max_tokens


def test_loadgen_against_the_server(server: RunningServer):
    spec = LoadSpec(concurrency=2, requests=6, images=(ImageSpec(96, 64, "jpeg"),), max_tokens=4)
    summary = asyncio.run(
        run_load(server.base_url, spec, model=server.model, api_pid=api_pid(server))
    ).to_dict()
    _check_summary(summary, requests=6, max_tokens=4)
    # one 96x64 image is 3x2 = 6 visual tokens on top of the text
    assert summary["prompt_tokens_mean"] > 6


def test_loadgen_cli_text_only(server: RunningServer, capsys: pytest.CaptureFixture[str]):
    argv = ["--url", server.base_url, "-c", "1", "-n", "2", "--max-tokens", "3", "--warmup", "1"]
    code = loadgen.main([*argv, "--api-pid", str(api_pid(server)), "--json"])
    summary = json.loads(capsys.readouterr().out)
    assert code == 0
    _check_summary(summary, requests=2, max_tokens=3)


def test_loadgen_records_http_errors(server: RunningServer):
    spec = LoadSpec(concurrency=1, requests=2, max_tokens=2)
    bodies = [b"{not json", json.dumps({"model": "no-such-model", "messages": []}).encode()]
    summary = asyncio.run(
        run_load(server.base_url, spec, model=server.model, bodies=Bodies(bodies, []))
    )
    assert summary.errors == 2 and summary.ok == 0 and summary.requests_per_s == 0
    assert all(sample.startswith("HTTP 4") for sample in summary.error_samples)
    assert summary.ttft_p50_s is None and summary.api_cpu_s_per_req is None


def test_image_spec_parsing():
    assert ImageSpec.parse("512x256:PNG") == ImageSpec(512, 256, "png")
    assert ImageSpec.parse("64x64") == ImageSpec(64, 64, "jpeg")
    assert ImageSpec.parse("512x512:dicom") == ImageSpec(512, 512, "dicom")
    assert str(ImageSpec(2048, 2048, "jpeg")) == "2048x2048:jpeg"
    for bad in ("512", "512x512:gif", "0x5:png", "axb"):
        with pytest.raises(ValueError):
            ImageSpec.parse(bad)


def test_synthetic_images_are_exact_and_unique():
    png = encode_variant(61, 37, "png", seed=3, index=1)
    decoded = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    assert np.array_equal(decoded, variant_image(61, 37, 3, 1))
    assert png != encode_variant(61, 37, "png", seed=3, index=2)
    jpeg = Image.open(io.BytesIO(encode_variant(80, 40, "jpeg", seed=0, index=0)))
    assert (jpeg.format, jpeg.size) == ("JPEG", (80, 40))
    assert decoded.std() > 10  # structure, not a flat colour


def test_each_request_gets_its_own_image():
    spec = LoadSpec(concurrency=1, requests=2, images=(ImageSpec(32, 32, "png"),) * 2)
    first, second = (json.loads(loadgen.request_body(spec, "m", i)) for i in range(2))
    urls = [
        part["image_url"]["url"]
        for body in (first, second)
        for part in body["messages"][0]["content"]
        if part["type"] == "image_url"
    ]
    assert len(urls) == len(set(urls)) == 4
    assert first["stream_options"] == {"include_usage": True} and first["ignore_eos"] is True


def test_radiology_formats_are_what_they_claim():
    import pydicom

    png16 = Image.open(io.BytesIO(encode_variant(64, 48, "png16", seed=2, index=1)))
    assert (png16.format, png16.mode, png16.size) == ("PNG", "I;16", (64, 48))
    assert 255 < np.asarray(png16).max() < 4096  # 12 bits of signal
    ct = pydicom.dcmread(io.BytesIO(encode_variant(64, 48, "dicom", seed=2, index=1)))
    assert (ct.Modality, ct.Rows, ct.Columns, ct.RescaleIntercept) == ("CT", 48, 64, -1024)
    hounsfield = ct.pixel_array.astype(np.int32) + int(ct.RescaleIntercept)
    assert np.array_equal(hounsfield, ct_hounsfield(64, 48, 2, 1))
    assert encode_variant(64, 48, "dicom", 2, 1) != encode_variant(64, 48, "dicom", 2, 2)


def test_followup_bodies_resend_the_image_with_the_conversation():
    spec = LoadSpec(1, 2, (ImageSpec(40, 40, "jpeg"),), followup=True, warmup=1)
    bodies = Bodies.build(spec, "m")
    assert [len(b) for b in (bodies.priming, bodies.measured, bodies.warmup_priming)] == [2, 2, 1]
    first = json.loads(bodies.priming[1])["messages"]
    followup = json.loads(bodies.measured[1])["messages"]
    assert [m["role"] for m in first] == ["user"]
    assert [m["role"] for m in followup] == ["user", "assistant", "user"]
    assert followup[0] == first[0]  # the same image, sent again
    assert followup[0] != json.loads(bodies.measured[0])["messages"][0]


def test_vllm_gets_the_ct_slice_as_the_png_a_client_would_send():
    spec = LoadSpec(1, 1, (ImageSpec(56, 56, "dicom"),))
    ours = json.loads(Bodies.build(spec, "m").measured[0])["messages"][0]["content"][0]
    theirs = json.loads(Bodies.build(spec, "m", no_dicom=True).measured[0])
    url = theirs["messages"][0]["content"][0]["image_url"]["url"]
    assert ours["image_url"]["url"].startswith("data:application/dicom;base64,")
    assert url.startswith("data:image/png;base64,")
    builder = PromptBuilder(None, "", 3136, 12845056)
    windowed = np.asarray(builder.image(ours["image_url"]["url"]))
    assert np.array_equal(windowed, np.asarray(builder.image(url)))  # the same pixels


def test_engine_alone_inputs():
    spec = LoadSpec(16, 8, (ImageSpec(2048, 2048, "png"),), max_tokens=32, warmup=2)
    assert spec_from_dict(json.loads(json.dumps(spec_to_dict(spec)))) == spec

    def url(data: bytes) -> str:
        return "data:image/jpeg;base64," + base64.b64encode(data).decode()

    jpeg = url(encode_variant(1000, 600, "jpeg", 0, 0))
    assert PromptBuilder(None, "", 3136, 12845056).image(jpeg).shape == (588, 1008, 3)
    # a tighter budget goes on the message, as in our server: one resize, straight to it
    assert PromptBuilder(None, "", 3136, 200_000).image(jpeg).shape == (336, 560, 3)
    tiny = url(encode_variant(20, 20, "png", 0, 0))
    assert PromptBuilder(None, "", 3136, 12845056).image(tiny).shape == (56, 56, 3)


def _run(
    target: str,
    case: str,
    rps: float,
    ttft: float,
    errors: int = 0,
    repeat: int = 0,
    cpu: float | None = None,
):
    summary = dict.fromkeys(report.METRICS)
    summary.update(
        requests_per_s=rps,
        ttft_p50_s=ttft,
        e2e_p50_s=ttft * 2,
        errors=errors,
        requests=10,
        api_cpu_s_per_req=cpu,
    )
    return {"repeat": repeat, "target": target, "case": case, "summary": summary, "load": 1.5}


def _statuses(built: dict) -> dict[tuple[str, str], str]:
    return {(c["case"], c["target"]): c["status"] for c in built["checks"]}


def test_report_passes_when_every_target_is_met():
    runs = []
    for repeat, jitter in enumerate((0.9, 1.1, 1.0)):  # medians over repeats
        runs += [
            _run(OURS, "c16-jpeg512", 30 * jitter, 0.10, repeat=repeat, cpu=0.005),
            _run(VLLM, "c16-jpeg512", 17.5, 0.20, repeat=repeat, cpu=0.010),
            _run(ENGINE, "c16-jpeg512", 34.0, 0.08, repeat=repeat),
            _run(OURS, "c16-jpeg2048", 12.0, 0.30, repeat=repeat, cpu=0.02),
            _run(VLLM, "c16-jpeg2048", 5.7, 1.00, repeat=repeat, cpu=0.04),
            _run(OURS, "c1-text", 9.0, 0.020, repeat=repeat),
            _run(VLLM, "c1-text", 8.0, 0.030, repeat=repeat),
        ]
    built = report.build_report(runs, image_cases=["c16-jpeg512", "c16-jpeg2048"])
    assert built["medians"]["c16-jpeg512"][OURS]["requests_per_s"] == pytest.approx(30)
    assert built["medians"]["c16-jpeg512"][OURS]["repeats"] == 3
    assert built["ratios"]["c16-jpeg512"]["rps_vs_engine"] == pytest.approx(30 / 34)
    assert built["ratios"]["c16-jpeg512"]["api_cpu_vs_vllm"] == pytest.approx(0.5)
    assert built["load"] == [1.5, 1.5, 1.5]
    statuses = [c["status"] for c in built["checks"]]
    assert set(statuses) == {"PASS"}
    assert len(statuses) == 9  # per image case: req/s, API CPU, TTFT (+2x, + engine); text: TTFT
    text = report.render_report(built)
    assert "1.71x" in text and "0.50x" in text and "FAIL" not in text
    assert "Machine load" in text
    markdown = report.render_report(built, markdown=True)
    assert markdown.splitlines()[0].count("|") == len(report.HEADER) + 1


def test_report_fails_misses_and_skips_missing_targets():
    runs = [
        _run(OURS, "c16-jpeg512", 20, 0.18, cpu=0.012),  # 1.14x, TTFT 0.9x, CPU 1.2x, 0.54x
        _run(VLLM, "c16-jpeg512", 17.5, 0.20, cpu=0.010),
        _run(ENGINE, "c16-jpeg512", 36.8, 0.08),
        _run(OURS, "c16-jpeg2048", 10, 0.1, cpu=0.05),  # 1.75x: passes 1.3x, fails 2x
        _run(VLLM, "c16-jpeg2048", 5.7, 1.0),  # API CPU not measured: SKIP
        _run(OURS, "c16-png2048", 10, 0.1, errors=1, cpu=0.1),  # our errors fail every check
        _run(VLLM, "c16-png2048", 4, 1.0, cpu=0.2),
        _run(OURS, "c1-text", 9, 0.02),  # vLLM not measured: SKIP
    ]
    image_cases = ["c16-jpeg512", "c16-jpeg2048", "c16-png2048"]
    checks = report.build_report(runs, image_cases)["checks"]
    assert [c["status"] for c in checks if c["case"] == "c16-jpeg512"] == ["FAIL"] * 4
    jpeg2048 = [c["status"] for c in checks if c["case"] == "c16-jpeg2048"]
    assert jpeg2048 == ["PASS", "SKIP", "FAIL", "PASS"]
    assert {c["status"] for c in checks if c["case"] == "c16-png2048"} == {"FAIL"}
    assert any("errors" in c["note"] for c in checks if c["case"] == "c16-png2048")
    assert [c["status"] for c in checks if c["case"] == "c1-text"] == ["SKIP"]
    text = report.render_report(report.build_report(runs, image_cases))
    assert "FAIL" in text and "SKIP" in text


def test_report_warns_when_targets_saw_different_prompts():
    runs = [_run(OURS, "c16-jpeg512", 20, 0.1), _run(VLLM, "c16-jpeg512", 17.5, 0.2)]
    runs[0]["summary"]["prompt_tokens_mean"] = 387
    runs[1]["summary"]["prompt_tokens_mean"] = 420
    assert report.build_report(runs, ["c16-jpeg512"])["warnings"]


def test_compare_smoke_and_full_plans(tmp_path):
    parser = compare.build_parser()
    smoke = compare.plan_from_args(parser.parse_args(["--smoke"]), model_dir=str(tmp_path))
    assert smoke.repeats == 1 and smoke.targets == [OURS, VLLM, ENGINE]
    assert [name for name, _ in smoke.cases] == list(compare.SMOKE_CASES)
    assert all(spec.requests == compare.SMOKE_REQUESTS for _, spec in smoke.cases)
    full = compare.plan_from_args(
        parser.parse_args(
            ["--requests-scale", "0.5", "--repeats", "3", "--case-requests", "c16-png2048=5"]
        ),
        model_dir=str(tmp_path),
    )
    assert full.repeats == 3 and [name for name, _ in full.cases] == list(compare.CASES)
    specs = dict(full.cases)
    assert specs["c16-jpeg512"].requests == compare.CASES["c16-jpeg512"].requests // 2
    assert specs["c64-jpeg512"].concurrency == 64 and specs["c1-text"].images == ()
    assert specs["c16-png2048"].images == (ImageSpec(2048, 2048, "png"),)
    assert specs["c16-png2048"].requests == 5
    with pytest.raises(SystemExit):
        compare.plan_from_args(parser.parse_args(["--case-requests", "c9-gif=3"]), "unused")
    assert all(spec.max_tokens == 32 and spec.ignore_eos for spec in specs.values())
    assert full.image_cases == [
        "c16-jpeg512",
        "c16-jpeg2048",
        "c16-png2048",
        "c64-jpeg512",
        "c1-jpeg512",
        "c1-jpeg2048",
        "c1-png16",
        "c1-dicom-ct",
        "c1-followup-jpeg1024",
    ]
    assert specs["c1-followup-jpeg1024"].followup and not specs["c1-jpeg512"].followup
    light = compare.plan_from_args(parser.parse_args(["--smoke", "--model-variant", "light"]))
    assert light.config.model.endswith("-light")
    assert smoke.config.cpu and target_env(smoke.config)["VLLM_CPU_KVCACHE_SPACE"]


def test_gpu_mode_drops_the_cpu_settings():
    args = compare.build_parser().parse_args(
        ["--gpu", "--model", "/models/Lingshu-7B", "--tensor-parallel-size", "2"]
    )
    config = compare.plan_from_args(args).config
    assert not config.cpu and config.tensor_parallel_size == 2
    assert config.model == "/models/Lingshu-7B"
    for cmd in (ours_command(config, 8000), vllm_command(config, 8001)):
        assert "--enforce-eager" not in cmd and "--no-enforce-eager" in cmd
        assert "--max-model-len" not in cmd
        assert cmd[cmd.index("--tensor-parallel-size") + 1] == "2"
        assert cmd[cmd.index("--gpu-memory-utilization") + 1] == "0.9"
    env = target_env(config)
    assert env.get("VLLM_CPU_KVCACHE_SPACE") == os.environ.get("VLLM_CPU_KVCACHE_SPACE")


def test_every_target_gets_the_same_engine_arguments(tmp_path):
    """vLLM's own parser accepts the vLLM command line, and our server, vLLM's server and the
    engine-alone run end up with the same engine arguments. (One test: vLLM imports are slow.)"""
    from vllm import AsyncEngineArgs
    from vllm.entrypoints.launchers.cli_args import make_arg_parser, validate_parsed_serve_args
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    from lingshu_server.cli import build_parser as ours_parser
    from lingshu_server.core.image_budget import PixelBudget
    from lingshu_server.core.settings import Settings
    from lingshu_server.engine.engine_args import engine_kwargs as server_engine_kwargs
    from lingshu_server.engine.lora import LoraPlan

    args = compare.build_parser().parse_args(["--smoke", "--vllm-arg=--disable-log-stats"])
    plan = compare.plan_from_args(args, model_dir=str(tmp_path))
    expected = AsyncEngineArgs(**engine_kwargs(plan.config))

    cmd = vllm_command(plan.config, 8123, plan.vllm_args)
    assert cmd[1:3] == ["-m", "vllm.entrypoints.openai.api_server"]
    parsed = make_arg_parser(FlexibleArgumentParser()).parse_args(cmd[3:])
    validate_parsed_serve_args(parsed)
    assert parsed.port == 8123 and parsed.disable_log_stats
    theirs = AsyncEngineArgs.from_cli_args(parsed)
    for name in (
        "model",
        "served_model_name",
        "dtype",
        "max_model_len",
        "gpu_memory_utilization",
        "enforce_eager",
        "tensor_parallel_size",
        "pipeline_parallel_size",
        "limit_mm_per_prompt",
        "scheduling_policy",
    ):
        assert getattr(theirs, name) == getattr(expected, name), name
    # vLLM's server resizes video frames in its processor; ours sends them resized
    expected_kwargs = dict(expected.mm_processor_kwargs, videos_kwargs=None)
    assert {**theirs.mm_processor_kwargs, "videos_kwargs": None} == expected_kwargs
    structured = theirs.structured_outputs_config
    assert (structured.backend, structured.disable_any_whitespace) == ("xgrammar", True)

    ours = vars(ours_parser().parse_args(ours_command(plan.config, 8124)[3:]))
    assert ours.pop("command") == "serve" and not ours.pop("demo_build_only")
    assert not ours.pop("light")
    settings = Settings(**ours)
    budget = PixelBudget(settings.min_pixels, settings.max_pixels)
    ours_args = dataclasses.asdict(
        AsyncEngineArgs(**server_engine_kwargs(settings, budget, LoraPlan()))
    )
    expected_args = dataclasses.asdict(expected)
    # Compact JSON: vLLM's server needs its engine-wide switch; ours hands the engine a compact
    # grammar per request (structured_output.py), so its engine runs plain xgrammar.
    assert ours_args.pop("structured_outputs_config")["backend"] == "xgrammar"
    expected_args.pop("structured_outputs_config")
    assert ours_args == expected_args


def test_profile_summary_groups_working_samples(capsys):
    from benchmarks import profile_summary

    raw = [
        "thread (0x1): image_0;_worker (concurrent/futures/thread.py:81) 50\n",  # idle
        "thread (0x1): image_0;decode_image (lingshu_server/inputs/media.py:330);"
        "Image.resize (PIL/Image.py:2440) 30\n",
        "thread (0x2): MainThread;"
        "TelemetryMiddleware.__call__ (lingshu_server/http/telemetry.py:57);"
        "RequestResponseCycle.send (uvicorn/protocols/http/httptools_impl.py:544) 10\n",
    ]
    total, threads, components = profile_summary.summarize(raw)
    assert total == 40 and threads == {"image": 30, "MainThread": 10}
    assert components["image resize (PIL)"] == 30
    assert components["HTTP (uvicorn, starlette, socket writes)"] == 10
    text = profile_summary.render(total, threads, components)
    assert "75.0%  image resize (PIL)" in text


def test_stream_timing_reads_split_chunks_and_times_each_token():
    event = b"data: " + json.dumps({"id": "r", "choices": [{"token_ids": [1, 2]}]}).encode()
    wire = b"%x\r\n%s\n\n\r\n" % (len(event) + 2, event)
    decoder = stream_timing.ChunkedEvents()
    events = [event for k in range(0, len(wire), 7) for event in decoder.feed(wire[k : k + 7])]
    record = stream_timing.StreamRecord()
    stream_timing._note_event(record, events[0], now=10.5)
    assert record.request_id == "r" and [a.tokens for a in record.arrivals] == [2]
    # the engine core made the two tokens at 10.0 and 10.48: they arrived 500 and 20 ms late
    made = {"r": [(1, 10.0, 10.01, 10.02), (1, 10.48, 10.485, 10.49)]}
    timings = stream_timing.token_timings([record], made)
    assert np.allclose(timings["client"], [0.5, 0.02]) and timings["gaps"] == [0.0]
    assert stream_timing.summarize(timings, [record])["late_share"] == 0.5
