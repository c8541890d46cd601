"""The command line: every setting documented, env variables honoured, bad models refused."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lingshu_server.cli import build_parser, main
from lingshu_server.core.settings import Settings
from tests.utils.in_process_care import process_logging_kept


@pytest.fixture(autouse=True)
def keep_logging():
    """`main` configures logging for a process: put back this one's, where the in-process test
    servers write their logs."""
    with process_logging_kept():
        yield


def test_help_documents_every_setting(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for name, field in Settings.model_fields.items():
        assert "--" + name.replace("_", "-") in text
        assert "LINGSHU_" + name.upper() in text
        assert field.description and " ".join(field.description.split())[:40] in text


def test_settings_from_flags_and_env(monkeypatch):
    monkeypatch.setenv("LINGSHU_MAX_PIXELS", "1003520")
    monkeypatch.setenv("LINGSHU_TENSOR_PARALLEL_SIZE", "4")
    args = vars(
        build_parser().parse_args(
            [
                "--model",
                "/m",
                "--tensor-parallel-size",
                "2",
                "--served-model-name",
                "a",
                "b",
                "--enforce-eager",
            ]
        )
    )
    args.pop("command"), args.pop("demo_build_only"), args.pop("light")
    settings = Settings(**args)
    assert settings.tensor_parallel_size == 2  # the flag wins over the env variable
    assert settings.max_pixels == 1003520  # the env variable fills what flags leave
    assert settings.served_model_names == ["a", "b"]
    assert settings.enforce_eager is True


def test_default_served_name_is_directory_name(tmp_path):
    model_dir = tmp_path / "Lingshu-7B"
    model_dir.mkdir()
    assert Settings(model=str(model_dir)).served_model_names == ["Lingshu-7B"]
    assert Settings(model="lingshu-medical-mllm/Lingshu-32B").served_model_names == [
        "lingshu-medical-mllm/Lingshu-32B"
    ]


def test_invalid_setting_exits_2(capsys):
    assert main(["--model", "/m", "--min-pixels", "9000000", "--max-pixels", "5000"]) == 2
    assert "min_pixels" in capsys.readouterr().err


def test_missing_model_exits_2(capsys, monkeypatch):
    monkeypatch.delenv("LINGSHU_MODEL", raising=False)
    assert main([]) == 2
    assert "--model" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("architectures", "model_type"),
    [(["InternVLChatModel"], "internvl_chat"), (["LlamaForCausalLM"], "llama")],
)
def test_refuses_non_qwen25vl_model(tmp_path, capsys, architectures, model_type):
    """`python -m lingshu_server` exits with what `main` returns; called here in process."""
    model_dir = tmp_path / "Lingshu-I-8B"
    model_dir.mkdir()
    (model_dir / "config.json").write_text(
        json.dumps({"architectures": architectures, "model_type": model_type})
    )
    assert main(["--model", str(model_dir), "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert architectures[0] in err
    assert "Qwen2.5-VL" in err
    assert "Traceback" not in err


def test_refuses_directory_without_config(tmp_path, capsys):
    assert main(["--model", str(tmp_path)]) == 2
    assert "config.json" in capsys.readouterr().err


def test_console_script_installed():
    script = Path(sys.executable).parent / "lingshu-server"
    result = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    assert result.stdout.startswith("lingshu-server ")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Lingshu-7B", ["Lingshu-7B"]),  # how a Kubernetes manifest writes one value
        ("Lingshu-7B, lingshu", ["Lingshu-7B", "lingshu"]),
        ('["Lingshu-7B", "lingshu"]', ["Lingshu-7B", "lingshu"]),
    ],
)
def test_list_settings_from_the_environment(monkeypatch, value, expected):
    monkeypatch.setenv("LINGSHU_SERVED_MODEL_NAME", value)
    monkeypatch.setenv("LINGSHU_CORS_ORIGINS", value)
    settings = Settings()
    assert settings.served_model_name == expected
    assert settings.cors_origins == expected


def test_image_budget_defaults_to_the_checkpoint_and_may_only_tighten(tmp_path):
    from lingshu_server.core.image_budget import PixelBudget, checkpoint_budget, server_budget
    from lingshu_server.demo_model import derive_demo_model

    model = derive_demo_model(tmp_path / "ckpt", min_pixels=3136, max_pixels=401408)
    checkpoint = checkpoint_budget(str(model))
    assert checkpoint.budget == PixelBudget(3136, 401408)
    assert "size.shortest_edge/longest_edge" in checkpoint.source
    assert server_budget(None, None, checkpoint)[0] == PixelBudget(3136, 401408)
    assert server_budget(None, 200704, checkpoint)[0] == PixelBudget(3136, 200704)
    with pytest.raises(ValueError, match="above this checkpoint's limit of 401408"):
        server_budget(None, 12845056, checkpoint)


def test_unreadable_pacs_credentials_file_is_one_clear_line(capsys, tmp_path):
    from lingshu_server.demo_model import ensure_demo_model

    missing = tmp_path / "pacs-credentials"
    code = main(
        [
            "--model",
            str(ensure_demo_model()),
            "--dicomweb-urls",
            "http://127.0.0.1:9/dicom-web",
            "--dicomweb-auth",
            f"basic:{missing}",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert f"cannot read the PACS credentials file {missing}" in err
    assert "Traceback" not in err


def test_demo_light_builds_the_light_checkpoint(capsys):
    """`demo --light --demo-build-only` prints the light variant: the demo's weights and
    tokenizer, a vision tower without its full-attention block."""
    import json
    from pathlib import Path

    from lingshu_server.demo_model import ensure_demo_model

    assert main(["demo", "--light", "--demo-build-only"]) == 0
    light = Path(capsys.readouterr().out.strip())
    demo = ensure_demo_model()
    assert light != demo
    config = json.loads((light / "config.json").read_text())
    demo_config = json.loads((demo / "config.json").read_text())
    assert config["vision_config"]["fullatt_block_indexes"] == []
    assert demo_config["vision_config"]["fullatt_block_indexes"] == [1]
    config["vision_config"].pop("fullatt_block_indexes")
    demo_config["vision_config"].pop("fullatt_block_indexes")
    assert config == demo_config  # nothing else differs
    for name in ("model.safetensors", "tokenizer.json", "preprocessor_config.json"):
        assert (light / name).resolve() == (demo / name).resolve()
