"""The local servers and the in-process harness that tests and benchmarks both use.

Nothing here imports pytest: ``benchmarks/`` runs on the ``bench`` extra alone. A server that cannot
start because its program is not installed raises :class:`ServerMissing`; the tests turn that into
a failure in CI and a skip elsewhere (``integration_platform_tests.services.missing``).
"""


class ServerMissing(RuntimeError):
    """A program a sandbox server needs is not installed; the message names it and its package."""
