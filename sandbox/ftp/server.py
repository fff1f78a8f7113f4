"""A local FTP / explicit-FTPS server over a directory: pyftpdlib, one user, for the FTP resource's tests.

  --root DIR --port 0 --user U --password-env NAME     plain FTP, the user's home is DIR (permissions elradfmw)
  --tls --cert PEM --key PEM                           explicit FTPS (RFC 4217): TLS is required on the control
                                                       channel before USER/PASS and on every data channel
                                                       (PROT P before PASV/EPSV/PORT/EPRT), else 550
  --require-session-reuse                              with --tls: refuse a data channel whose TLS handshake does
                                                       not resume the control channel's session (522), as vsftpd
                                                       (require_ssl_reuse=YES, its default), ProFTPD and FileZilla
                                                       Server do; pyftpdlib itself never requires it
  --no-mlsd                                            answer MLSD/MLST with 500, like servers without RFC 3659 MLSx
  --hostile-name NAME (repeatable)                     a hostile server: every MLSD listing also lists NAME (for
                                                       example ../../other/x.csv) as a 10-byte file of 2021-01-05

The password is read from the environment variable named by --password-env, never from the command line.
Passive data ports come from 61000-64999, above Linux's default ephemeral range. A failed login answers
after 0.1 s (pyftpdlib's default delay is 3 s). Listens on 127.0.0.1 only and prints exactly one line
"listening on ftp://127.0.0.1:<port>" once it accepts connections.
"""

from __future__ import annotations

import argparse
import errno
import os
from typing import Any, ClassVar

from OpenSSL import SSL
from pyftpdlib.authorizers import DummyAuthorizer
from pyftpdlib.filesystems import AbstractedFS
from pyftpdlib.handlers import FTPHandler, TLS_DTPHandler, TLS_FTPHandler
from pyftpdlib.servers import FTPServer

PASSIVE_PORTS = range(61000, 65000)


class ReuseRequiringDTPHandler(TLS_DTPHandler):
    """A data channel that must resume the control channel's TLS session (vsftpd's require_ssl_reuse)."""

    def handle_ssl_established(self) -> None:
        # pyOpenSSL has no public Connection.session_reused(); the binding is OpenSSL's SSL_session_reused
        if not SSL._lib.SSL_session_reused(self.socket._ssl):
            self.cmd_channel.respond("522 SSL connection failed: session reuse required")
            self.cmd_channel.log_cmd("PROT", "P", 522, "session reuse required")
            self.close()


def without_mlsx(handler: type[Any]) -> type[Any]:
    """``handler`` with MLSD and MLST answered 500 and left out of FEAT, like a pre-RFC 3659 server."""

    class NoMlsx(handler):
        proto_cmds: ClassVar[dict[str, Any]] = {
            k: v for k, v in handler.proto_cmds.items() if k not in ("MLSD", "MLST")
        }

    return NoMlsx


def listing_also(names: list[str]) -> type[AbstractedFS]:
    """A file system whose MLSD listings end with ``names`` as plain files, whatever they hold: what a
    hostile or broken server may send (RFC 3659 names are meant to be bare names)."""

    class Hostile(AbstractedFS):
        def format_mlsx(self, basedir: str, listing: Any, perms: str, facts: Any, ignore_err: bool = True) -> Any:
            yield from super().format_mlsx(basedir, listing, perms, facts, ignore_err)
            for name in names:
                line = f"modify=20210105000000;size=10;type=file; {name}\r\n"
                yield line.encode(self.cmd_channel.encoding, self.cmd_channel.unicode_errors)

    return Hostile


def refusing_overwrite(base: type[AbstractedFS]) -> type[AbstractedFS]:
    """A file system whose rename refuses an existing target (RNTO answers 550), as IIS does and ProFTPD
    with ``AllowOverwrite off``; pyftpdlib's own replaces it (``os.rename``)."""

    class NoOverwrite(base):
        def rename(self, src: str, dst: str) -> None:
            if os.path.lexists(dst):
                raise OSError(errno.EEXIST, "Cannot create a file when that file already exists")
            super().rename(src, dst)

    return NoOverwrite


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", required=True, help="directory served as the user's home")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--user", required=True)
    parser.add_argument("--password-env", required=True, help="name of the environment variable with the password")
    parser.add_argument("--tls", action="store_true", help="explicit FTPS, TLS required on control and data")
    parser.add_argument("--cert", help="PEM certificate (chain) for --tls")
    parser.add_argument("--key", help="PEM private key for --tls")
    parser.add_argument("--require-session-reuse", action="store_true")
    parser.add_argument("--no-mlsd", action="store_true")
    parser.add_argument("--max-logins", type=int, default=0, help="control connections per client IP (0: no limit)")
    parser.add_argument("--hostile-name", action="append", default=[], help="also list this name in MLSD")
    parser.add_argument("--no-overwrite", action="store_true", help="RNTO onto an existing file answers 550")
    parser.add_argument(
        "--refuse-dir", action="append", default=[], help="a folder under --root the user may not enter or list"
    )
    args = parser.parse_args()

    password = os.environ.get(args.password_env)
    if password is None:
        parser.error(f"environment variable {args.password_env} is not set")
    if args.tls and not (args.cert and args.key):
        parser.error("--tls needs --cert and --key")

    authorizer = DummyAuthorizer()
    authorizer.add_user(args.user, password, os.path.abspath(args.root), perm="elradfmw")
    for refused in args.refuse_dir:  # CWD and listings answer 550, as a missing folder's do
        authorizer.override_perm(args.user, os.path.join(os.path.abspath(args.root), refused), perm="radfmw")

    handler: type[Any]
    if args.tls:
        handler = type("Handler", (TLS_FTPHandler,), {})
        handler.certfile, handler.keyfile = args.cert, args.key
        handler.ssl_options = SSL.OP_NO_SSLv2 | SSL.OP_NO_SSLv3 | SSL.OP_NO_COMPRESSION
        handler.tls_control_required = True
        handler.tls_data_required = True
        if args.require_session_reuse:
            handler.dtp_handler = ReuseRequiringDTPHandler
    else:
        handler = type("Handler", (FTPHandler,), {})
    if args.no_mlsd:
        handler = without_mlsx(handler)
    handler.authorizer = authorizer
    if args.hostile_name:
        handler.abstracted_fs = listing_also(args.hostile_name)
    if args.no_overwrite:
        handler.abstracted_fs = refusing_overwrite(handler.abstracted_fs)
    handler.passive_ports = PASSIVE_PORTS
    handler.auth_failed_timeout = 0.1
    handler.banner = "integration-platform sandbox FTP server ready."

    server = FTPServer(("127.0.0.1", args.port), handler)
    server.max_cons_per_ip = args.max_logins  # pyftpdlib answers 421 to one more
    port = server.address[1]
    print(f"listening on ftp://127.0.0.1:{port}", flush=True)
    try:
        server.serve_forever(handle_exit=True)
    finally:
        server.close_all()


if __name__ == "__main__":
    main()
