"""Where a shard set lives: local paths and object-store URLs, read and written the same way.

A shard set (or a WebDataset tar set) is a local folder or an ``s3://``/``gs://``/``r2://`` prefix. The few
small files stoker reads and writes beside litdata's chunks (metadata, labels, pack progress) go through
litdata's own object-store providers, with the options the streaming uses, so that metadata and chunks are
reached the same way; an endpoint that does not answer fails within seconds, named.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

REMOTE_SCHEMES: tuple[str, ...] = ("s3", "gs", "r2")


def is_remote(location: str) -> bool:
    """Whether ``location`` is an object-store URL (``s3://``, ``gs://``, ``r2://``)."""
    return urlparse(location).scheme in REMOTE_SCHEMES


def join(location: str, *parts: str) -> str:
    """``location/part/...`` for a local path or an object-store URL."""
    if is_remote(location):
        return "/".join([location.rstrip("/"), *parts])
    return os.path.join(os.path.expanduser(location), *parts)


def check_location(location: str) -> None:
    """Raise ``ValueError`` for a URL scheme litdata cannot stream (``http://``, ``azure://``, typos)."""
    scheme = urlparse(location).scheme
    if scheme and scheme not in REMOTE_SCHEMES and len(scheme) > 1:  # "C:" is a Windows drive, not a scheme
        known = ", ".join(f"{name}://" for name in REMOTE_SCHEMES)
        raise ValueError(f"{location!r}: stoker streams shard sets from local paths or {known} URLs, not {scheme}://")


def allow_plain_http(storage_options: dict[str, Any] | None = None) -> None:
    """Let litdata's object-store client talk to an ``http://`` endpoint (MinIO, a loopback test server).

    litdata 0.2.x uploads and prefetches through obstore, whose HTTP client refuses ``http://``
    unless told ``allow_http``; litdata never tells it, so an S3-compatible endpoint without TLS
    (``AWS_ENDPOINT_URL=http://...``) fails with "BadScheme". Where the endpoint is plain http,
    this adds the option to litdata's obstore client settings (a module-level dict). Called in
    every process that touches litdata (DataLoader workers included).
    """
    endpoint = str((storage_options or {}).get("endpoint_url") or os.environ.get("AWS_ENDPOINT_URL", ""))
    if not endpoint.startswith("http://"):
        return
    try:
        from litdata.streaming import downloader
    except ImportError:
        return
    options = getattr(downloader, "_OBSTORE_CLIENT_OPTIONS", None)
    if isinstance(options, dict):
        options["allow_http"] = True


CONNECT_TIMEOUT_S = 5  # stoker's own metadata requests: a dead endpoint fails in seconds, not minutes
METADATA_ATTEMPTS = 3


def provider(url: str, storage_options: dict[str, Any] | None) -> Any:
    """litdata's object-store provider for ``url`` (see below for why with short timeouts)."""
    # litdata's own object-store access (boto3 for s3/r2, google-cloud-storage for gs), with the
    # options the streaming uses, so that metadata and chunks are read the same way. Its S3 client
    # retries up to 1,000 times: right for a long run's chunk downloads, wrong for the few small files
    # stoker reads at set-up (an unreachable endpoint blocked for over five minutes), so these get
    # short timeouts and 3 attempts unless the options bring a botocore config of their own.
    from litdata.streaming.fs_provider import _get_fs_provider

    allow_plain_http(storage_options)
    options = dict(storage_options or {})
    if urlparse(url).scheme in ("s3", "r2") and "config" not in options:
        import botocore.config

        options["config"] = botocore.config.Config(connect_timeout=CONNECT_TIMEOUT_S, read_timeout=30,
                                                   retries={"max_attempts": METADATA_ATTEMPTS, "mode": "standard"})
    return _get_fs_provider(url, options)


def unreachable(location: str, err: BaseException) -> OSError:
    """The error for an object store that does not answer: where, which endpoint, why, and what to check."""
    endpoint = os.environ.get("AWS_ENDPOINT_URL") or "the provider's default endpoint"
    return ConnectionError(f"cannot read {location!r} from {endpoint} ({type(err).__name__}: {err}). Check the URL, "
                           "the endpoint (AWS_ENDPOINT_URL or storage_options={'endpoint_url': ...}), the "
                           "credentials (environment or profile) and the network")


def read_text(location: str, storage_options: dict[str, Any] | None = None) -> str | None:
    """The text of a file (local or remote), or ``None`` when it does not exist.

    Raises:
        ConnectionError: The object store does not answer (named, within seconds).
    """
    if not is_remote(location):
        path = Path(location)
        return path.read_text(encoding="utf-8") if path.is_file() else None
    store = provider(location, storage_options)
    try:
        if not store.exists(location):
            return None
        with tempfile.TemporaryDirectory() as tmp:
            local = os.path.join(tmp, "file")
            store.download_file(location, local)
            return Path(local).read_text(encoding="utf-8")
    except Exception as err:  # botocore's EndpointConnectionError, ClientError, ... (not a missing file)
        raise unreachable(location, err) from err


def write_text(location: str, text: str, storage_options: dict[str, Any] | None = None) -> None:
    """Write a small text file (local: atomically, by rename; remote: one upload)."""
    if not is_remote(location):
        path = Path(location)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial")
        partial.write_text(text, encoding="utf-8")
        partial.replace(path)
        return
    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, "file")
        Path(local).write_text(text, encoding="utf-8")
        provider(location, storage_options).upload_file(local, location)


def delete(location: str, storage_options: dict[str, Any] | None = None) -> None:
    """Delete one file if it exists."""
    if not is_remote(location):
        Path(location).unlink(missing_ok=True)
        return
    store = provider(location, storage_options)
    if store.exists(location):
        store.delete_file_or_directory(location)


def list_names(location: str, storage_options: dict[str, Any] | None = None) -> set[str] | None:
    """Names of the files directly in a folder or under a URL prefix (``None``: cannot list this store)."""
    sizes = list_sizes(location, storage_options)
    return None if sizes is None else set(sizes)


def list_sizes(location: str, storage_options: dict[str, Any] | None = None) -> dict[str, int] | None:
    """``{name: bytes}`` of the files directly in a folder or under a URL prefix (``None``: cannot list this store)."""
    if not is_remote(location):
        folder = Path(location)
        return {entry.name: entry.stat().st_size for entry in os.scandir(folder)} if folder.is_dir() else {}
    parsed = urlparse(location)
    if parsed.scheme not in ("s3", "r2"):
        return None  # litdata's gs provider cannot list; the chunks are then checked when read
    client = provider(location, storage_options).client.client
    prefix = parsed.path.lstrip("/").rstrip("/") + "/"
    sizes: dict[str, int] = {}
    try:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=parsed.netloc, Prefix=prefix):
            sizes.update({item["Key"][len(prefix):]: int(item["Size"]) for item in page.get("Contents", [])})
    except Exception as err:  # botocore raises many types; say where and why
        raise unreachable(location, err) from err
    return {name: size for name, size in sizes.items() if "/" not in name}
