"""SftpResource: a file-drop server over SFTP (SSH File Transfer Protocol version 3), through paramiko.

Protocols. SSH is RFC 4251 (architecture), RFC 4252 (authentication), RFC 4253 (transport:
key exchange, ciphers, host keys) and RFC 4254 (channels, window and maximum packet size);
AES-GCM for SSH is RFC 5647 as OpenSSH implements it (``aes128-gcm@openssh.com``). SFTP is
version 3, draft-ietf-secsh-filexfer-02, the version OpenSSH and nearly every server speak;
``limits@openssh.com`` is OpenSSH's extension reporting the server's largest read (OpenSSH
``PROTOCOL`` file, section 4.8). SSH itself is paramiko (``SSHClient``, ``Transport``,
``SFTPClient``); the platform adds host-key policy and error messages (``sftp_connect.py``) and the
download loop (``sftp_files.py``).

Host keys. A connection is refused unless the server's host key is checked: against an
OpenSSH ``known_hosts`` file (an unknown key is refused, a changed key is refused) or against
a pinned SHA256 fingerprint as ``ssh-keygen -lf`` prints it. The check runs after the key
exchange and before authentication, so no password or key signature is sent to a server that
fails it. Keys are never added automatically.

Downloads. paramiko's ``SFTPClient.get`` reads 32 KiB per request; its prefetch thread
either sends every request of the file at once and then searches its buffers linearly for each
read (slow for large files), or, with ``max_concurrent_prefetch_requests``, polls in 10 ms
sleeps. :meth:`SftpFiles.download` instead keeps ``max_concurrent_requests`` reads of
``request_size`` bytes in flight on paramiko's SFTP channel (its request/response layer,
``SFTPClient._async_request`` / ``_read_response``) and writes each reply at its offset; the
request size is lowered to the server's ``limits@openssh.com`` read limit when it reports one,
and to any shorter reply it sends (draft-02 lets a server return fewer bytes than asked). With
a large channel window and maximum packet size and AES-GCM this runs at roughly OpenSSH
``sftp``'s speed on loopback (see ``benchmarks/sftp_download.py``). Many small files go through
:meth:`SftpFiles.download_many`, which keeps several files in flight on the same channel (their
opens, fstats, first reads and closes pipelined): a 5 KB file costs one round trip's share instead
of four round trips.

Errors: everything is raised as :class:`~integration_platform.sources.files.remote_files.RemoteFileError`
(host keys: :class:`~integration_platform.sources.files.remote_files.HostKeyError`)
naming ``sftp://host:port`` and the path; messages never contain the password, the private
key or its passphrase. The connection is opened in :mod:`~integration_platform.sources.files.sftp_connect`,
the session's operations are :mod:`~integration_platform.sources.files.sftp_files`; both import paramiko, this
module does not (building the definitions needs only the resource's settings).
"""

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import dagster as dg
from pydantic import Field

if TYPE_CHECKING:
    from integration_platform.sources.files.sftp_files import SftpFiles

#: Default cipher preference: the client's order decides (RFC 4253 section 7.1). AES-GCM needs no
#: separate MAC and is the cheapest for paramiko; CBC and 3DES are left out.
PREFERRED_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "aes128-ctr", "aes192-ctr", "aes256-ctr")
MIB = 1 << 20
#: OpenSSH's largest read reply (SFTP_MAX_MSG_LENGTH 256 KiB less 1 KiB); larger requests come back short.
OPENSSH_MAX_READ = 255 * 1024


class SftpResource(dg.ConfigurableResource):
    """An SFTP server. Open a connection with :meth:`connect` (one per run and server).

    Authentication is ``private_key`` (the PEM or OpenSSH text of the key, RSA, ECDSA or
    Ed25519, optionally encrypted with ``private_key_passphrase``) and/or ``password``; set
    secrets with ``dg.EnvVar``. The server's identity is checked against ``known_hosts`` (an
    OpenSSH known_hosts file; hashed entries work; a non-default port is written
    ``[host]:port``) or ``host_key_fingerprint`` (``SHA256:<base64>`` as ``ssh-keygen -lf``
    prints it, of the key type the server offers first: normally ed25519); one of them is
    required. With both, a host listed in ``known_hosts`` must match it and an unlisted host
    must match the fingerprint.

    Timeouts are seconds: ``connect_timeout`` bounds the TCP connect, the SSH banner, the
    key exchange and authentication; ``timeout`` bounds each wait for a reply on the SFTP
    channel. ``keepalive_seconds`` sends an SSH keepalive after that many idle seconds (0: never).

    Download tuning (see ``benchmarks/sftp_download.py``): ``ciphers`` in order of preference
    (paramiko's names); ``window_size`` (bytes) is the SSH channel window (RFC 4254 section
    5.2: how much the server may send before we acknowledge); ``max_packet_size`` (bytes) is
    the largest SSH data packet we accept; ``request_size`` (bytes) is the length of each SFTP
    read (capped by the server's ``limits@openssh.com`` when it reports one) and
    ``max_concurrent_requests`` how many reads are in flight at once. Their product (about
    8 MiB) should cover the link's bandwidth x round-trip time; a window much larger than that
    costs: paramiko's channel buffer moves its whole content on every partial read, so when
    the reader falls behind a 32 MiB window made downloads slower, not faster.
    """

    host: str
    port: int = 22
    username: str
    password: str | None = Field(default=None, description="Password; set with dg.EnvVar.")
    private_key: str | None = Field(default=None, description="Text of the private key; set with dg.EnvVar.")
    private_key_passphrase: str | None = Field(default=None, description="Passphrase of private_key, if encrypted.")
    known_hosts: str | None = Field(default=None, description="Path of an OpenSSH known_hosts file.")
    host_key_fingerprint: str | None = Field(
        default=None, description="Expected host key fingerprint, 'SHA256:<base64>' as ssh-keygen -lf prints it."
    )
    connect_timeout: float = 10.0
    timeout: float = 60.0
    keepalive_seconds: int = 30
    ciphers: list[str] = Field(default_factory=lambda: list(PREFERRED_CIPHERS))
    window_size: int = 8 * MIB
    max_packet_size: int = 256 * 1024
    request_size: int = OPENSSH_MAX_READ
    max_concurrent_requests: int = 32

    @property
    def where(self) -> str:
        """``sftp://host:port``, as errors name the server."""
        return f"sftp://{self.host}:{self.port}"

    @contextmanager
    def connect(self) -> Iterator["SftpFiles"]:
        """An authenticated SFTP session, closed when the block ends.

        Raises :class:`~integration_platform.sources.files.remote_files.HostKeyError` when neither
        ``known_hosts`` nor ``host_key_fingerprint`` is set, or the server's host key is unknown or
        differs from the expected one; raises :class:`~integration_platform.sources.files.remote_files.RemoteFileError`
        when the server cannot be reached, authentication fails, the private key cannot be loaded or no
        cipher is shared.
        """
        from integration_platform.sources.files.sftp_connect import open_client  # paramiko: when a step connects
        from integration_platform.sources.files.sftp_files import SftpFiles

        files = SftpFiles(self, open_client(self))
        try:
            yield files
        finally:
            files.close()
