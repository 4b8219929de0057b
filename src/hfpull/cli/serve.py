"""``hfpull serve``: run the caching mirror."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer

from hfpull.cli.plumbing import Debug, errors, open_input, settings
from hfpull.cli.sizes import parse_size
from hfpull.errors import UsageError

serve_app = typer.Typer(
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
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
    max_cache_size: Annotated[
        str | None,
        typer.Option(
            "--max-cache-size",
            envvar="HFPULL_SERVE_MAX_CACHE_SIZE",
            metavar="SIZE",
            help="Evict least recently used blobs above this size: 500G or 500GB = 500*10^9 "
            "bytes, 10GiB = 10*2^30, 1.5T, or plain bytes. Default: no cap.",
        ),
    ] = None,
    seed: Annotated[
        list[Path] | None,
        typer.Option("--seed", help="An HF cache (or unpacked archive) to import at start."),
    ] = None,
    store_url: Annotated[
        str | None,
        typer.Option(
            "--store",
            envvar="HFPULL_SERVE_STORE",
            metavar="URL",
            help="Keep blobs and metadata on an object store shared by replicas: "
            "s3://bucket/prefix (default: local disk at --cache-dir).",
        ),
    ] = None,
    s3_endpoint: Annotated[
        str | None,
        typer.Option(
            "--s3-endpoint",
            envvar=["HFPULL_S3_ENDPOINT", "AWS_ENDPOINT_URL"],
            metavar="URL",
            help="S3-compatible endpoint (MinIO, SeaweedFS, …; default: AWS).",
        ),
    ] = None,
    s3_region: Annotated[
        str | None,
        typer.Option("--s3-region", envvar=["AWS_REGION", "AWS_DEFAULT_REGION"], help="S3 region."),
    ] = None,
    local_cache_size: Annotated[
        str | None,
        typer.Option(
            "--local-cache-size",
            envvar="HFPULL_SERVE_LOCAL_CACHE_SIZE",
            metavar="SIZE",
            help="With --store: keep up to SIZE of blobs on local disk (at --cache-dir) and "
            "serve them from there. Default: none.",
        ),
    ] = None,
    lease_ttl: Annotated[
        float,
        typer.Option(
            "--lease-ttl",
            envvar="HFPULL_SERVE_LEASE_TTL",
            min=1,
            help="With --store: seconds after which a replica that stopped renewing its fill "
            "lease is presumed dead and another takes the fill over.",
        ),
    ] = 15.0,
    allow: Annotated[
        list[str] | None,
        typer.Option(
            "--allow",
            envvar="HFPULL_SERVE_ALLOW",
            metavar="CIDR",
            help="Only clients in this address range (repeatable; default: any).",
        ),
    ] = None,
    trust_proxy: Annotated[
        list[str] | None,
        typer.Option(
            "--trust-proxy",
            envvar="HFPULL_SERVE_TRUST_PROXY",
            metavar="CIDR",
            help="Take the client address from X-Forwarded-For when the peer is in this range.",
        ),
    ] = None,
    auth_tokens: Annotated[
        Path | None,
        typer.Option(
            "--auth-tokens",
            envvar="HFPULL_SERVE_AUTH_TOKENS",
            metavar="FILE",
            help="Require a token from FILE ('NAME TOKEN [SCOPE...]' lines) on every route.",
        ),
    ] = None,
    allow_repo: Annotated[
        list[str] | None,
        typer.Option(
            "--allow-repo",
            envvar="HFPULL_SERVE_ALLOW_REPO",
            metavar="GLOB",
            help="Serve only repos matching this org/name glob (repeatable).",
        ),
    ] = None,
    deny_repo: Annotated[
        list[str] | None,
        typer.Option(
            "--deny-repo",
            envvar="HFPULL_SERVE_DENY_REPO",
            metavar="GLOB",
            help="Never serve repos matching this org/name glob (repeatable; wins over allow).",
        ),
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
    """Run a caching Hub mirror: point HF_ENDPOINT at it (needs: pip install 'hfpull[serve]')."""
    if ctx.invoked_subcommand is not None:
        return
    import dataclasses

    from hfpull.serve.access import AccessConfig
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
        cap = None if max_cache_size is None else parse_size(max_cache_size)
        local_cap = (
            None if local_cache_size is None else parse_size(local_cache_size, "--local-cache-size")
        )
        if store_url is None and local_cap is not None:
            raise UsageError("--local-cache-size needs --store (a local store is all local)")
        objects, label = (
            (None, None) if store_url is None else _object_store(store_url, s3_endpoint, s3_region)
        )
        access = AccessConfig(
            tuple(allow or ()), tuple(trust_proxy or ()), auth_tokens,
            tuple(allow_repo or ()), tuple(deny_repo or ()),
        )  # fmt: skip
        config = ServeConfig(
            upstream_settings,
            metadata_ttl,
            offline,
            max_cache_size=cap,
            access=access,
            metrics=metrics,
            local_cache_size=local_cap,
            store_label=label,
            lease_ttl=lease_ttl,
        )
        run(config, host, port, access_log, tuple(seed or ()), objects)


def _object_store(url: str, endpoint: str | None, region: str | None) -> tuple[Any, str]:
    """The object store at ``url``, checked once: unreachable is exit 3 (network),
    refused credentials or a missing bucket the error the store raises (exit 7 or 2)."""
    if not url.startswith("s3://"):
        raise UsageError(f"--store: {url[:80]!r} is not an s3://bucket/prefix URL")
    from hfpull.blobstore.s3 import S3Config, S3ObjectStore

    try:
        import boto3  # noqa: F401 (only to say clearly that the extra is missing)
    except ImportError as exc:
        raise UsageError(
            f"--store s3:// needs the s3 extra ({exc.name} is missing)",
            hint="pip install 'hfpull[serve,s3]'",
        ) from None
    config = S3Config.from_url(url, endpoint=endpoint, region=region)
    store = S3ObjectStore(config)
    store.check()
    return store, config.where


@serve_app.command("import")
def import_(
    archives: Annotated[
        list[str], typer.Argument(help="hfpull pack archives (files, or - for stdin).")
    ],
    cache_dir: Annotated[
        Path | None,
        typer.Option(
            "--cache-dir",
            envvar="HFPULL_SERVE_CACHE_DIR",
            help="The mirror's store (default: HF_HOME/hfpull-serve).",
        ),
    ] = None,
    debug: Debug = False,
) -> None:
    """Check archives completely, then seed the store with them (for --offline mirrors)."""
    import sys

    from hfpull.cli.render import human
    from hfpull.settings import hf_home

    with errors(debug):
        from hfpull.serve.archive_import import import_archives

        if archives.count("-") > 1:
            raise UsageError("stdin (-) can be read once")
        store = cache_dir or hf_home(os.environ) / "hfpull-serve"
        reports = import_archives(archives, store, open_input)
    for report in reports:
        snap = report.snapshot
        offline = "" if report.metadata else " (filtered archive: blobs only, no revision)"
        print(
            f"{report.source}: {snap.repo.repo_id}@{snap.revision} = {snap.commit}: "
            f"{report.blobs_new} new blobs ({human(report.bytes_new)}), "
            f"{report.blobs_present} already stored{offline}"
        )
    sys.stdout.flush()


@serve_app.command()
def refresh(
    repo: Annotated[str, typer.Argument(help="REPO_ID or REPO_ID@REVISION.")],
    mirror: Annotated[
        str | None,
        typer.Option("--mirror", help="The hfpull serve to ask (default: $HF_ENDPOINT)."),
    ] = None,
    repo_type: Annotated[
        str, typer.Option("--repo-type", help="model, dataset or space.")
    ] = "model",
    token: Annotated[
        str | None, typer.Option("--token", help="A token with the +admin scope ($HF_TOKEN).")
    ] = None,
    debug: Debug = False,
) -> None:
    """Make a mirror revalidate one revision's metadata now; print the commit before/after."""
    from hfpull.models import RepoRef
    from hfpull.names import parse_repo_spec, validate_repo_type
    from hfpull.prewarm import MirrorAdmin

    with errors(debug):
        repo_id, revision = parse_repo_spec(repo)
        target = RepoRef(repo_id, validate_repo_type(repo_type))
        found = settings(None, None, mirror, None, token)
        before, after = MirrorAdmin(found.endpoint, found.token).refresh(target, revision)
    change = "unchanged" if before == after else f"{before or '(not cached)'} -> {after}"
    print(f"{repo_id}@{revision}: {after} ({change})")
