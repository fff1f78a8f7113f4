"""Importing this module imports and builds the code location (``integration_platform.definitions``)
in the processes that fork step processes: the multiprocess executor's server (``preload_modules``)
and a Celery worker's main process (its settings module). A forked step process then starts with
every module of the code location imported, where it would otherwise import them itself, about
1 s on the 2-core test machine, and, from the multiprocess executor's server, with the definitions
built too (they are cached per process for the same environment and ``defs/`` files). A Celery
pool process still builds them (0.1 s): Celery adds its logging variables to the environment after
loading its settings, so the cache's key differs. A code location that does not load fails the
Celery worker at start; in the multiprocess executor's server it fails the run's step processes,
as it would have failed the run itself first."""

from integration_platform.definitions import defs

defs()
