"""The rehearsal's object store: moto's S3 server started as its own process on 127.0.0.1 (the `moto_server`
script beside this Python), a bucket in it, and the environment every S3 client of the stage reads (endpoint,
dummy keys); stopped when the stage ends."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tagstream.tools.bench.rehearsal_context import BUCKET, Context

_START_TIMEOUT_S = 60.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def s3_env(endpoint: str) -> dict[str, str]:
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "rehearsal",
        "AWS_SECRET_ACCESS_KEY": "rehearsal-dummy-secret",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    }


@contextmanager
def s3_server(ctx: Context) -> Iterator[str]:
    """Start moto on a free port, create the bucket, put its environment into ctx.env (and its pid into
    ctx.keep, so no step reaps it); yields the endpoint and stops the server after the stage."""
    script = Path(sys.executable).with_name("moto_server")
    if not script.is_file():
        raise ValueError(f"{script} not found: the s3 stage needs moto's server (pip install 'moto[server]')")
    port = _free_port()
    log = open(ctx.log("s3-server"), "ab")
    proc = subprocess.Popen(
        [str(script), "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    endpoint = f"http://127.0.0.1:{port}"
    saved = dict(ctx.env)
    try:
        deadline = time.monotonic() + _START_TIMEOUT_S
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise ValueError(f"moto_server did not start on port {port}; see {ctx.log('s3-server')}") from None
                time.sleep(0.2)
        ctx.keep.add(proc.pid)
        ctx.env.update(s3_env(endpoint))
        import botocore.session

        env = s3_env(endpoint)
        client = botocore.session.get_session().create_client(
            "s3",
            endpoint_url=endpoint,
            region_name=env["AWS_REGION"],
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        )
        client.create_bucket(Bucket=BUCKET)
        ctx.facts["s3_endpoint"] = endpoint
        yield endpoint
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        ctx.keep.discard(proc.pid)
        ctx.env.clear()
        ctx.env.update(saved)
