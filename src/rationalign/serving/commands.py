"""``rationalign serve`` and ``rationalign export``: added to the main Typer app by :func:`register`."""

from __future__ import annotations

import ipaddress
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from rationalign.errors import ConfigError

console = Console()
err_console = Console(stderr=True)


class BackendChoice(StrEnum):
    torch = "torch"
    onnx = "onnx"
    onnx_int8 = "onnx-int8"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(
    model: Annotated[Path, typer.Argument(help="A model folder (rationalign train) or an export folder.")],
    host: Annotated[
        str, typer.Option(help="Interface to bind; the default serves this machine only.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="TCP port (0: any free port).")] = 8000,
    api_key: Annotated[
        str | None,
        typer.Option(envvar="RATIONALIGN_API_KEY", help="Require this key (X-API-Key or Bearer) on the API."),
    ] = None,
    backend: Annotated[BackendChoice, typer.Option(help="torch, or ONNX Runtime on an export folder.")] = (
        BackendChoice.torch
    ),
    max_text_chars: Annotated[int, typer.Option(min=1, help="Longer texts are refused with 413.")] = 1000,
    max_batch: Annotated[int, typer.Option(min=1, help="Most texts per request and per micro-batch.")] = 64,
    queue_size: Annotated[int, typer.Option(min=1, help="Waiting requests before 429.")] = 256,
    max_wait_ms: Annotated[float, typer.Option(min=0, help="How long a micro-batch waits to fill.")] = 2.0,
    threads: Annotated[
        int | None, typer.Option(min=1, help="Intra-op threads for torch / ONNX Runtime.")
    ] = None,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
) -> None:
    """Serve a model over HTTP: /predict, /explain, /health, /metrics, /docs and a web page at /."""
    import uvicorn

    from rationalign.serving.app import create_app

    if not model.is_dir():
        raise ConfigError(f"{model}: no such model folder; fix: pass a folder written by `rationalign train`")
    if threads:
        import torch

        torch.set_num_threads(threads)
    if not _is_loopback(host) and not api_key:
        err_console.print(
            f"warning: serving on {host} without an API key; anyone who can reach it can use it"
        )
    app = create_app(
        model,
        api_key=api_key,
        max_text_chars=max_text_chars,
        max_batch=max_batch,
        queue_size=queue_size,
        max_wait_ms=max_wait_ms,
        backend=backend.value,
        threads=threads,
    )
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=False)
    console.print(f"serving {model} ({backend.value}) on http://{host}:{port}/  (Ctrl+C stops)")
    uvicorn.Server(config).run()


def export(
    model: Annotated[Path, typer.Argument(help="A model folder written by rationalign.")],
    out: Annotated[Path, typer.Option(help="Folder to write (replaced if it holds an earlier export).")],
    onnx: Annotated[
        bool, typer.Option("--onnx", help="Add model.onnx (opset 17, dynamic batch/sequence).")
    ] = False,
    int8: Annotated[
        bool, typer.Option("--int8", help="Also add model.int8.onnx (dynamic int8; implies --onnx).")
    ] = False,
    weights: Annotated[bool, typer.Option(help="Copy the PyTorch weights too (needed by /explain).")] = True,
) -> None:
    """Copy a model to a self-contained folder, optionally with verified ONNX graphs for serving."""
    from rationalign.serving.onnx_export import export_model

    if not model.is_dir():
        raise ConfigError(f"{model}: no such model folder; fix: pass a folder written by `rationalign train`")
    result = export_model(model, out, onnx=onnx or int8, int8=int8, copy_weights=weights)
    console.print(f"[green]exported to {result.out_dir}[/green]: {', '.join(result.files)}")
    if result.max_abs_diff is not None:
        console.print(
            f"  ONNX fp32 vs PyTorch: max |logit difference| {result.max_abs_diff:.2e} on probe sentences"
        )
    if result.int8_argmax_agreement is not None:
        console.print(
            f"  ONNX int8 vs PyTorch: argmax agreement {result.int8_argmax_agreement:.0%} on probe sentences"
        )
    if onnx or int8:
        flag = "onnx-int8" if int8 else "onnx"
        console.print(f"  serve it: rationalign serve {result.out_dir} --backend {flag}")


def register(app: typer.Typer) -> None:
    """Add ``serve`` and ``export`` to ``app``."""
    app.command("serve")(serve)
    app.command("export")(export)
