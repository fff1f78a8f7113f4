"""SftpResource: a file-drop server over SFTP (SSH File Transfer Protocol version 3), through paramiko.

Protocols. SSH is RFC 4251 (architecture), RFC 4252 (authentication), RFC 4253 (transport:
key exchange, ciphers, host keys) and RFC 4254 (channels, window and maximum packet size);
AES-GCM for SSH is RFC 5647 as OpenSSH implements it (``aes128-gcm@openssh.com``). SFTP is
version 3, draft-ietf-secsh-filexfer-02, the version OpenSSH and nearly every server speak;
``limits@openssh.com`` is OpenSSH's extension reporting the server's largest read (OpenSSH
``PROTOCOL`` file, section 4.8). SSH itself is paramiko (``SSHClient``, ``Transport``,
``SFTPClient``); this module adds host-key policy, error messages and the download loop.

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

Errors: everything is raised as :class:`RemoteFileError` (host keys: :class:`HostKeyError`)
naming ``sftp://host:port`` and the path; messages never contain the password, the private
key or its passphrase.
"""

import io
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import dagster as dg
import paramiko
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from pydantic import Field

from integration_platform.sources.files.remote_files import HostKeyError, RemoteFileError
from integration_platform.sources.files.sftp_files import NETWORK_ERRORS, SftpFiles

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

        Raises :class:`HostKeyError` when neither ``known_hosts`` nor ``host_key_fingerprint``
        is set, or the server's host key is unknown or differs from the expected one; raises
        :class:`RemoteFileError` when the server cannot be reached, authentication fails, the
        private key cannot be loaded or no cipher is shared.
        """
        files = SftpFiles(self, self._open_client())
        try:
            yield files
        finally:
            files.close()

    # ------------------------------------------------------------------ connection

    def _open_client(self) -> paramiko.SSHClient:
        if not self.known_hosts and not self.host_key_fingerprint:
            raise HostKeyError(
                f"{self.where}: no host key to check the server against; set known_hosts (path of an OpenSSH "
                "known_hosts file) or host_key_fingerprint ('SHA256:...' as `ssh-keygen -lf <host key>.pub` prints "
                "it); connecting to an unverified server is refused"
            )
        if not self.password and not self.private_key:
            raise RemoteFileError(f"{self.where}: no credentials; set password or private_key (with dg.EnvVar)")
        pkey = self._load_private_key() if self.private_key else None
        client = paramiko.SSHClient()
        if self.known_hosts:
            try:
                client.load_system_host_keys(self.known_hosts)  # "system": read only, never written back
            except (OSError, paramiko.SSHException) as exc:
                raise RemoteFileError(f"{self.where}: cannot read known_hosts {self.known_hosts!r}: {exc}") from None
        client.set_missing_host_key_policy(_HostKeyPolicy(self))
        try:
            client.connect(
                self.host,
                self.port,
                username=self.username,
                password=self.password,
                pkey=pkey,
                timeout=self.connect_timeout,
                banner_timeout=self.connect_timeout,
                auth_timeout=self.connect_timeout,
                channel_timeout=self.connect_timeout,
                allow_agent=False,
                look_for_keys=False,
                # paramiko 5 passes only disabled_algorithms; types-paramiko still declares the GSS keywords
                transport_factory=self._transport,  # type: ignore[arg-type]
            )
        except HostKeyError:
            client.close()
            raise
        except paramiko.BadHostKeyException as exc:
            client.close()
            raise HostKeyError(self._changed_key_message(exc.key, exc.expected_key)) from None
        except paramiko.AuthenticationException as exc:
            client.close()
            how = " and ".join(n for n, v in (("private_key", self.private_key), ("password", self.password)) if v)
            raise RemoteFileError(
                f"{self.where}: authentication as {self.username!r} with {how} failed: {exc}"
            ) from None
        except TimeoutError:
            client.close()
            raise RemoteFileError(f"{self.where}: no answer within connect_timeout={self.connect_timeout}s") from None
        except NETWORK_ERRORS as exc:
            client.close()
            raise RemoteFileError(f"{self.where}: cannot connect: {type(exc).__name__}: {exc}") from exc
        transport = client.get_transport()
        assert transport is not None
        if self.keepalive_seconds > 0:
            transport.set_keepalive(self.keepalive_seconds)
        return client

    def _transport(self, sock: socket.socket, **kwargs: Any) -> paramiko.Transport:
        """paramiko's ``transport_factory``: a Transport with our cipher preference."""
        transport = paramiko.Transport(sock, **kwargs)
        try:
            transport.get_security_options().ciphers = tuple(self.ciphers)
        except ValueError as exc:
            transport.close()
            raise RemoteFileError(f"{self.where}: invalid ciphers setting {self.ciphers}: {exc}") from None
        return transport

    def _load_private_key(self) -> paramiko.PKey:
        assert self.private_key is not None
        text = self.private_key.strip()
        if "\n" not in text and "\\n" in text:  # a key pasted into a .env file as one line with \n escapes
            text = text.replace("\\n", "\n")
        text += "\n"
        passphrase = self.private_key_passphrase.encode() if self.private_key_passphrase else None
        try:
            try:
                loaded: Any = serialization.load_ssh_private_key(text.encode(), passphrase)
            except ValueError:
                loaded = serialization.load_pem_private_key(text.encode(), passphrase)
        except TypeError:  # encrypted without a passphrase, or a passphrase for a plain key
            raise RemoteFileError(
                f"{self.where}: private_key "
                + (
                    "is encrypted; set private_key_passphrase"
                    if passphrase is None
                    else "is not encrypted; unset private_key_passphrase"
                )
            ) from None
        except (ValueError, paramiko.SSHException):
            raise RemoteFileError(
                f"{self.where}: private_key cannot be loaded: not an OpenSSH or PEM private key, or a wrong "
                "private_key_passphrase"
            ) from None
        except Exception as exc:  # e.g. UnsupportedAlgorithm; its text holds no key material
            raise RemoteFileError(f"{self.where}: private_key cannot be loaded ({type(exc).__name__})") from None
        key_class: type[paramiko.PKey]
        if isinstance(loaded, rsa.RSAPrivateKey):
            key_class = paramiko.RSAKey
        elif isinstance(loaded, ed25519.Ed25519PrivateKey):
            key_class = paramiko.Ed25519Key
        elif isinstance(loaded, ec.EllipticCurvePrivateKey):
            key_class = paramiko.ECDSAKey
        else:
            raise RemoteFileError(f"{self.where}: private_key type {type(loaded).__name__} is not supported")
        # paramiko reads PEM only for RSA and ECDSA: hand it the key re-encoded in OpenSSH format (in memory)
        openssh = loaded.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
        ).decode()
        try:
            return key_class.from_private_key(io.StringIO(openssh))
        except (ValueError, TypeError, paramiko.SSHException):
            raise RemoteFileError(f"{self.where}: private_key cannot be loaded by paramiko") from None

    def _changed_key_message(self, seen: paramiko.PKey, expected: paramiko.PKey) -> str:
        name = self.host if self.port == 22 else f"[{self.host}]:{self.port}"
        return (
            f"{self.where}: the server's host key CHANGED: it now offers {seen.get_name()} {seen.fingerprint}, but "
            f"known_hosts {self.known_hosts!r} has {expected.get_name()} {expected.fingerprint} for it. Someone may be "
            "intercepting the connection, or the server was reinstalled: confirm the new key with the server's "
            f"administrator, then replace the entry (ssh-keygen -R '{name}' -f {self.known_hosts} and add the new "
            "key line)"
        )


class _HostKeyPolicy(paramiko.MissingHostKeyPolicy):
    """Like paramiko's RejectPolicy for a host missing from known_hosts, unless its key has the pinned fingerprint.

    Raises :class:`HostKeyError` naming the key type, the fingerprint seen and the one expected.
    """

    def __init__(self, config: SftpResource) -> None:
        self.config = config

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        c = self.config
        seen = key.fingerprint
        if c.host_key_fingerprint:
            expected = c.host_key_fingerprint.strip().rstrip("=")
            if not expected.startswith("SHA256:"):
                raise HostKeyError(
                    f"{c.where}: host_key_fingerprint must be 'SHA256:<base64>' as `ssh-keygen -lf` prints it; "
                    f"the server offers {key.get_name()} {seen}"
                )
            if seen == expected:
                return
            raise HostKeyError(
                f"{c.where}: the server's {key.get_name()} host key has fingerprint {seen}, but host_key_fingerprint "
                f"expects {expected}; the server may be impersonated, or its key (or the key type it offers first) "
                "changed: confirm the fingerprint with the server's administrator before changing the setting"
            )
        raise HostKeyError(
            f"{c.where}: the server's {key.get_name()} host key {seen} is not in known_hosts {c.known_hosts!r}; "
            "confirm the fingerprint with the server's administrator (ssh-keygen -lf on the server's host key), "
            f"then add the key to that file (e.g. from ssh-keyscan -p {c.port} {c.host}) or set host_key_fingerprint"
        )
