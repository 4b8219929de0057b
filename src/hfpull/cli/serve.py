"""``hfpull serve``: run the caching mirror."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from hfpull.cli.plumbing import Debug, errors, settings
from hfpull.errors import UsageError

serve_app = typer.Typer(
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@serve_app.callback(invoke_without_command=True)
def serve(
    ctx: typer.Context,
    upstream: Annotated[
        str | None,
        typer.Option(
            "--upstream",
            envvar="HFPULL_SERVE_UPSTREAM",
            help="Hub to mirror (default: HF_ENDPOINT, else huggingface.co).",
        ),
    ] = None,
    cache_dir: Annotated[
        Path | None,
        typer.Option(
            "--cache-dir",
            envvar="HFPULL_SERVE_CACHE_DIR",
            help="The mirror's store (default: HF_HOME/hfpull-serve).",
        ),
    ] = None,
    host: Annotated[
        str, typer.Option("--host", envvar="HFPULL_SERVE_HOST", help="Address to bind.")
    ] = "127.0.0.1",
    port: Annotated[
        int, typer.Option("--port", envvar="HFPULL_SERVE_PORT", min=1, max=65535)
    ] = 8090,
    upstream_token: Annotated[
        str | None,
        typer.Option(
            "--upstream-token",
            envvar="HFPULL_UPSTREAM_TOKEN",
            help="Token for upstream (gated repos); never sent to clients or the CDN.",
        ),
    ] = None,
    metadata_ttl: Annotated[
        float,
        typer.Option(
            "--metadata-ttl",
            envvar="HFPULL_SERVE_METADATA_TTL",
            min=0,
            help="Seconds a branch's file list is reused.",
        ),
    ] = 600.0,
    offline: Annotated[
        bool,
        typer.Option("--offline", envvar="HFPULL_SERVE_OFFLINE", help="Never contact upstream."),
    ] = False,
    access_log: Annotated[
        Path | None,
        typer.Option(
            "--access-log",
            envvar="HFPULL_SERVE_ACCESS_LOG",
            help="Write one JSON line per request to FILE.",
        ),
    ] = None,
    seed: Annotated[
        list[Path] | None,
        typer.Option("--seed", help="An HF cache (or unpacked archive) to import at start."),
    ] = None,
    metrics: Annotated[
        bool,
        typer.Option(
            "--metrics/--no-metrics",
            envvar="HFPULL_SERVE_METRICS",
            help="Count traffic for /metrics and the status page.",
        ),
    ] = True,
    debug: Debug = False,
) -> None:
    """Run a caching Hub mirror: point HF_ENDPOINT at it (needs: pip install 'hfpull\\[serve]')."""
    if ctx.invoked_subcommand is not None:
        return
    import dataclasses

    from hfpull.settings import hf_home

    with errors(debug):
        try:
            from hfpull.serve.app import ServeConfig, run
        except ImportError as exc:
            raise UsageError(
                f"hfpull serve needs the serve extra ({exc.name} is missing)",
                hint="pip install 'hfpull[serve]'",
            ) from None
        store = cache_dir or hf_home(os.environ) / "hfpull-serve"
        upstream_settings = dataclasses.replace(
            settings(store, None, upstream, None, None), token=upstream_token
        )
        config = ServeConfig(upstream_settings, metadata_ttl, offline, metrics=metrics)
        run(config, host, port, access_log, tuple(seed or ()))
