"""Interop with the real huggingface_hub (and transformers), both ways, in subprocesses.

hfpull must write exactly the cache huggingface_hub writes: its offline lookups must find
everything, `from_pretrained` must load offline, and hfpull must reuse what hf downloaded.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save
from tokenizers import Tokenizer, models, pre_tokenizers

from hfpull.pull import download
from tests.conftest import ROOT, cli_env, fast_settings
from tests.fakehub import FakeHub

WEIGHTS = {"layer.weight": np.arange(64 * 1024, dtype=np.float32).reshape(256, 256)}


def model_files() -> dict[str, bytes]:
    tokenizer = Tokenizer(models.WordLevel({"[UNK]": 0, "hello": 1, "world": 2}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    return {
        "config.json": json.dumps({"model_type": "bert", "hidden_size": 256}).encode(),
        "tokenizer.json": tokenizer.to_str().encode(),
        "tokenizer_config.json": json.dumps(
            {"tokenizer_class": "PreTrainedTokenizerFast", "unk_token": "[UNK]"}
        ).encode(),
        "model.safetensors": save(WEIGHTS),
        "nested/dir/notes file#1.txt": b"hello",
    }


# transformers and huggingface_hub load model_files() as "org/model"; it prints LOADED
LOAD_MODEL = """
    from transformers import AutoConfig, AutoTokenizer
    from huggingface_hub import hf_hub_download
    from safetensors.numpy import load_file
    config = AutoConfig.from_pretrained("org/model")
    tokenizer = AutoTokenizer.from_pretrained("org/model")
    weights = load_file(hf_hub_download("org/model", "model.safetensors"))
    print(config.model_type, config.hidden_size)
    print(tokenizer("hello world")["input_ids"])
    print(float(weights["layer.weight"].sum()))
    """
LOADED = ["bert 256", "[1, 2]", str(float(WEIGHTS["layer.weight"].sum()))]


def run_python(code: str, env: dict[str, str]) -> str:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=env, capture_output=True, text=True, cwd=ROOT, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.strip()


@pytest.fixture
def hf_env(tmp_path: Path, fake_hub: FakeHub) -> dict[str, str]:
    return cli_env(
        tmp_path,
        HF_ENDPOINT=fake_hub.url,
        HF_HUB_CACHE=str(tmp_path / "cache"),
        HF_HUB_DISABLE_XET="1",
        HF_HUB_DISABLE_TELEMETRY="1",
        HF_HUB_DISABLE_PROGRESS_BARS="1",
    )


def test_huggingface_hub_finds_offline_what_hfpull_wrote(
    fake_hub: FakeHub, tmp_path: Path, hf_env: dict[str, str]
) -> None:
    commit = fake_hub.add_repo("org/model", model_files())
    path = download("org/model", settings=fast_settings(fake_hub.url, tmp_path / "cache")).path
    fake_hub.reset_log()
    out = run_python(
        """
        from huggingface_hub import snapshot_download, hf_hub_download, try_to_load_from_cache
        from huggingface_hub import scan_cache_dir
        print(snapshot_download("org/model"))
        print(snapshot_download("org/model", local_files_only=True))
        print(hf_hub_download("org/model", "nested/dir/notes file#1.txt"))
        print(try_to_load_from_cache("org/model", "model.safetensors"))
        info = scan_cache_dir()
        repo = next(iter(info.repos))
        print(repo.repo_id, len(next(iter(repo.revisions)).files), len(info.warnings))
        """,
        {**hf_env, "HF_HUB_OFFLINE": "1"},
    ).splitlines()
    assert out[0] == out[1] == path and path.endswith(commit)
    assert out[2] == f"{path}/nested/dir/notes file#1.txt"
    assert out[3] == f"{path}/model.safetensors"
    assert out[4] == "org/model 5 0"
    assert fake_hub.requests == []  # offline means offline


def test_from_pretrained_loads_offline_from_hfpull_cache(
    fake_hub: FakeHub, tmp_path: Path, hf_env: dict[str, str]
) -> None:
    fake_hub.add_repo("org/model", model_files())
    download("org/model", settings=fast_settings(fake_hub.url, tmp_path / "cache"))
    offline = {**hf_env, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    assert run_python(LOAD_MODEL, offline).splitlines() == LOADED


def test_hfpull_reuses_blobs_huggingface_hub_downloaded(
    fake_hub: FakeHub, tmp_path: Path, hf_env: dict[str, str]
) -> None:
    fake_hub.add_repo("org/model", model_files())
    hf_path = run_python(
        "from huggingface_hub import snapshot_download; print(snapshot_download('org/model'))",
        hf_env,
    )
    fake_hub.reset_log()
    result = download("org/model", settings=fast_settings(fake_hub.url, tmp_path / "cache"))
    assert result.path == hf_path
    assert result.bytes_downloaded == 0 and {f.status for f in result.files} == {"present"}
    assert not [r for r in fake_hub.requests if "/resolve/" in r.path]


def test_hfpull_links_blobs_when_only_the_snapshot_is_missing(
    fake_hub: FakeHub, tmp_path: Path, hf_env: dict[str, str]
) -> None:
    """A new commit that shares blobs with a cached one: only new bytes are fetched."""
    files = model_files()
    fake_hub.add_repo("org/model", files)
    run_python(
        "from huggingface_hub import snapshot_download; snapshot_download('org/model')", hf_env
    )
    fake_hub.add_repo("org/model", {**files, "config.json": b'{"model_type": "bert", "v": 2}'})
    fake_hub.reset_log()
    result = download("org/model", settings=fast_settings(fake_hub.url, tmp_path / "cache"))
    assert result.bytes_downloaded == len(b'{"model_type": "bert", "v": 2}')
    assert Path(result.path, "model.safetensors").read_bytes() == files["model.safetensors"]


def test_local_dir_metadata_is_what_huggingface_hub_expects(
    fake_hub: FakeHub, tmp_path: Path, hf_env: dict[str, str]
) -> None:
    fake_hub.add_repo("org/model", model_files())
    target = tmp_path / "local"
    settings = fast_settings(fake_hub.url, tmp_path / "cache", local_dir=target)
    download("org/model", settings=settings)
    fake_hub.reset_log()
    out = run_python(
        "from huggingface_hub import snapshot_download\n"
        f"print(snapshot_download('org/model', local_dir={str(target)!r}))",
        hf_env,
    )
    assert out == str(target)
    downloads = [r for r in fake_hub.requests if "/resolve/" in r.path and r.method == "GET"]
    assert downloads == []  # hf saw every file as up to date and fetched nothing
