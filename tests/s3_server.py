"""A real S3-compatible server on 127.0.0.1 for tests: moto's server mode, in its own process.

`S3Server.start()` runs `moto_server` on a free port and waits until it answers HTTP;
`bucket()` creates a fresh bucket and returns its `s3://` URL; `stop()` ends the process.
Clients reach it like any S3 endpoint (`BYLLM_DISTILL_ARTIFACTS_ENDPOINT`), with the
dummy credentials in `ENV`.
"""

from __future__ import annotations

import itertools
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
       "AWS_DEFAULT_REGION": "us-east-1"}
_names = itertools.count(1)


class S3Server:
    def __init__(self) -> None:
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> None:
        binary = Path(sys.executable).parent / "moto_server"
        if not binary.exists():
            raise RuntimeError(f"{binary} is missing: pip install 'moto[server]' "
                               "(scripts/setup.sh installs the dev extra)")
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.process = subprocess.Popen(
            [str(binary), "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, **ENV})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"moto_server exited with {self.process.returncode}")
            try:
                urllib.request.urlopen(self.endpoint, timeout=2).close()
                return
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"moto_server did not answer on {self.endpoint} in {timeout:.0f} s")

    def bucket(self) -> str:
        import boto3

        name = f"distill-test-{os.getpid()}-{next(_names)}"
        client = boto3.client("s3", endpoint_url=self.endpoint, **{
            "aws_access_key_id": ENV["AWS_ACCESS_KEY_ID"],
            "aws_secret_access_key": ENV["AWS_SECRET_ACCESS_KEY"],
            "region_name": ENV["AWS_DEFAULT_REGION"]})
        client.create_bucket(Bucket=name)
        return f"s3://{name}/models"

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.process = None
