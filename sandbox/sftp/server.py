"""A local SFTP server over a directory for the demo: asyncssh (pure Python), one user, read/write.

  --root DIR --port 0 --user U          serve DIR as the SFTP root "/" (chroot: clients see /<path under DIR>)
  --host-key PATH                       the server's private host key (OpenSSH format); an ed25519 key is
                                        generated there, with PATH.pub, when the file is missing
  --authorized-key PATH                 a client public key (OpenSSH authorized_keys format) that may log in as U
  --password-env NAME                   or/and: the environment variable holding U's password (never on the
                                        command line)

  --hostile-name NAME (repeatable)      a hostile server: every directory listing also lists NAME (for example
                                        ../../other/x.csv) as a 10-byte regular file

At least one of --authorized-key and --password-env is required. Listens on 127.0.0.1 only and prints exactly
one line "listening on sftp://127.0.0.1:<port>" once it accepts connections; the host key's fingerprint
("SHA256:...", what SftpResource.host_key_fingerprint expects) goes to stderr. Stops on SIGTERM or SIGINT.
Only SFTP is served: no shell, exec, SCP or forwarding.
"""

import argparse
import asyncio
import hmac
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

import asyncssh


def host_key(path: Path) -> asyncssh.SSHKey:
    """The private host key at ``path``; generates an ed25519 key (and ``path.pub``) when missing."""
    if not path.exists():
        key = asyncssh.generate_private_key("ssh-ed25519", comment="sandbox sftp host key")
        path.parent.mkdir(parents=True, exist_ok=True)
        key.write_private_key(str(path))
        os.chmod(path, 0o600)
        key.write_public_key(str(path) + ".pub")
    return asyncssh.read_private_key(str(path))


class OneUser(asyncssh.SSHServer):
    """Authentication for one user: a public key from a list and/or a password (compared in constant time)."""

    def __init__(self, user: str, keys: Sequence[asyncssh.SSHKey], password: str | None) -> None:
        self.user = user
        self.keys = {key.public_data for key in keys}
        self.password = password

    def begin_auth(self, username: str) -> bool:
        return True  # every user must authenticate; only self.user can

    def public_key_auth_supported(self) -> bool:
        return bool(self.keys)

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        return username == self.user and key.public_data in self.keys

    def password_auth_supported(self) -> bool:
        return self.password is not None

    def validate_password(self, username: str, password: str) -> bool:
        assert self.password is not None
        return username == self.user and hmac.compare_digest(password.encode(), self.password.encode())


class HostileListing(asyncssh.SFTPServer):
    """An SFTP server whose directory listings end with names no honest server sends (``../x``, ``a/b``)."""

    def __init__(self, channel: asyncssh.SSHServerChannel, chroot: bytes, names: Sequence[str]) -> None:
        super().__init__(channel, chroot=chroot)
        self.names = names

    async def scandir(self, path: bytes) -> AsyncIterator[asyncssh.SFTPName]:
        async for entry in super().scandir(path):
            yield entry
        for name in self.names:
            attrs = asyncssh.SFTPAttrs(
                type=asyncssh.FILEXFER_TYPE_REGULAR, size=10, permissions=0o100644, mtime=1609804800, atime=1609804800
            )
            yield asyncssh.SFTPName(name.encode(), attrs=attrs)


def sftp_server(root: Path, hostile_names: Sequence[str]) -> Callable[[asyncssh.SSHServerChannel], asyncssh.SFTPServer]:
    """The SFTP session factory: plain, or listing ``hostile_names`` too."""
    chroot = str(root).encode()
    if hostile_names:
        return lambda channel: HostileListing(channel, chroot, hostile_names)
    return lambda channel: asyncssh.SFTPServer(channel, chroot=chroot)


async def serve(args: argparse.Namespace) -> None:
    root = Path(args.root).resolve()
    if not root.is_dir():
        raise SystemExit(f"--root {root} is not a directory")
    password = None
    if args.password_env:
        password = os.environ.get(args.password_env)
        if not password:
            raise SystemExit(f"environment variable {args.password_env} (--password-env) is empty or unset")
    keys = asyncssh.read_public_key_list(args.authorized_key) if args.authorized_key else []
    if not keys and password is None:
        raise SystemExit("give --authorized-key and/or --password-env")
    key = host_key(Path(args.host_key))
    server = await asyncssh.listen(
        "127.0.0.1",
        args.port,
        server_host_keys=[key],
        server_factory=lambda: OneUser(args.user, keys, password),
        sftp_factory=sftp_server(root, args.hostile_name),
        allow_scp=False,
        process_factory=None,
        agent_forwarding=False,
        x11_forwarding=False,
        allow_pty=False,
    )
    port = server.sockets[0].getsockname()[1]
    print(f"host key {key.get_fingerprint('sha256')} ({key.get_algorithm()})", file=sys.stderr, flush=True)
    print(f"listening on sftp://127.0.0.1:{port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    server.close()
    await server.wait_closed()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", required=True, help="directory served as /")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--user", default="demo")
    parser.add_argument("--host-key", required=True, help="private host key file (generated when missing)")
    parser.add_argument("--authorized-key", help="public key file of the client (authorized_keys format)")
    parser.add_argument("--password-env", help="name of the environment variable with the password")
    parser.add_argument("--hostile-name", action="append", default=[], help="also list this name in directories")
    asyncio.run(serve(parser.parse_args()))


if __name__ == "__main__":
    main()
