"""Opening an authenticated SSH connection for :class:`~integration_platform.sources.files.sftp.SftpResource`:
host-key policy, private keys, cipher preference and the errors they raise (the protocols and the host-key
rules are in :mod:`integration_platform.sources.files.sftp`'s docstring).

Kept apart from the resource so that building the definitions does not import paramiko and cryptography
(about 0.06-0.08 s): they are imported when a step connects.
"""

import io
import socket
from functools import partial
from typing import TYPE_CHECKING, Any

import paramiko
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from integration_platform.sources.files.remote_files import HostKeyError, RemoteFileError
from integration_platform.sources.files.sftp_files import NETWORK_ERRORS

if TYPE_CHECKING:
    from integration_platform.sources.files.sftp import SftpResource


def open_client(self: "SftpResource") -> paramiko.SSHClient:
    """An authenticated SSH client to ``self``'s server, its host key checked (see
    :meth:`SftpResource.connect` for what it raises)."""
    if not self.known_hosts and not self.host_key_fingerprint:
        raise HostKeyError(
            f"{self.where}: no host key to check the server against; set known_hosts (path of an OpenSSH "
            "known_hosts file) or host_key_fingerprint ('SHA256:...' as `ssh-keygen -lf <host key>.pub` prints "
            "it); connecting to an unverified server is refused"
        )
    if not self.password and not self.private_key:
        raise RemoteFileError(f"{self.where}: no credentials; set password or private_key (with dg.EnvVar)")
    pkey = _load_private_key(self) if self.private_key else None
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
            transport_factory=partial(_transport, self),
        )
    except HostKeyError:
        client.close()
        raise
    except paramiko.BadHostKeyException as exc:
        client.close()
        raise HostKeyError(_changed_key_message(self, exc.key, exc.expected_key)) from None
    except paramiko.AuthenticationException as exc:
        client.close()
        how = " and ".join(n for n, v in (("private_key", self.private_key), ("password", self.password)) if v)
        raise RemoteFileError(f"{self.where}: authentication as {self.username!r} with {how} failed: {exc}") from None
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


def _transport(self: "SftpResource", sock: socket.socket, **kwargs: Any) -> paramiko.Transport:
    """paramiko's ``transport_factory``: a Transport with our cipher preference."""
    transport = paramiko.Transport(sock, **kwargs)
    try:
        transport.get_security_options().ciphers = tuple(self.ciphers)
    except ValueError as exc:
        transport.close()
        raise RemoteFileError(f"{self.where}: invalid ciphers setting {self.ciphers}: {exc}") from None
    return transport


def _load_private_key(self: "SftpResource") -> paramiko.PKey:
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


def _changed_key_message(self: "SftpResource", seen: paramiko.PKey, expected: paramiko.PKey) -> str:
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

    def __init__(self, config: "SftpResource") -> None:
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
