"""Importing this module imports and builds the code location (``integration_platform.definitions``)
and imports the modules of the Dagster instance's storage, in the processes that fork step
processes: the multiprocess executor's server (``preload_modules``) and a Celery worker's main
process (its settings module). A forked step process then starts with them imported, where it would
otherwise import them itself: about 1 s for the code location and 0.3 s for the storage (Dagster's
SQL storage imports alembic) on the 2-core test machine, in every step process. From the
multiprocess executor's server it also finds the definitions built (they are cached per process for
the same environment and ``defs/`` files); a Celery pool process still builds them (0.1 s), since
Celery adds its logging variables to the environment after loading its settings, so the cache's key
differs. It also imports the clients a step imports when it connects (psycopg, paramiko and
cryptography, requests and oauthlib, SQLAlchemy), which building the definitions leaves out so that every other
process loads the code location faster. Nothing here opens a connection: a forked process must not
share one.

A code location that does not load fails the Celery worker at start; in the multiprocess executor's
server it fails the run's step processes, as it would have failed the run itself first."""

import os

import integration_platform.resources.http_client
import integration_platform.sources.files.sftp_connect
import integration_platform.sources.sql.postgres_arrow
import integration_platform.sources.sql.postgres_cdc
import integration_platform.sources.sql.sa_arrow  # noqa: F401  (imported for the step processes)
from integration_platform.definitions import defs
from integration_platform.instance import import_instance_storage

defs()
import_instance_storage(os.environ.get("DAGSTER_HOME"))
