"""Importing this module builds the code location (``integration_platform.definitions``), once per
process, for the processes that fork step processes: the multiprocess executor's server
(``preload_modules``) and a Celery worker's main process (its settings module). Each forked step
process then finds the definitions built (they are cached per process for the same environment and
the same ``defs/`` files) where it would otherwise import and build them itself, about 1-1.5 s on
the 2-core test machine. A code location that does not load fails there, at start."""

from integration_platform.definitions import defs

defs()
