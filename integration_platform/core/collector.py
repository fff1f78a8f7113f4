"""Python's cyclic garbage collector kept off the objects a step inherits, while the step runs.

A step's process holds a few hundred thousand long-lived objects before any row moves (Dagster's
definitions, the instance, the imported modules: 260,000 in the REST fan-out benchmark's step). Each
full collection (generation 2) walks all of them while holding the GIL, and an extraction that
allocates many containers (parsed JSON bodies, rows) triggers several: in the fan-out benchmark, four
full collections took 0.51 s in all, about 0.13 s each during which none of the 16 request threads could
read a response. ``gc.freeze()`` moves every object tracked so far (all generations, garbage not yet
collected included) into a permanent generation that no collection walks; ``gc.unfreeze()`` hands them
back to the oldest generation, so nothing is leaked: an object among them that became garbage is freed
by a later full collection. Objects created inside the block are collected as usual. While frozen,
objects are not listed by ``gc.get_objects()`` or ``gc.get_referrers()`` (mind it when debugging memory).

Source: the ``gc`` module's documentation (``gc.freeze``, ``gc.unfreeze``, ``gc.get_freeze_count``).
Why our own code: the standard library offers the two calls, not a scope that nests and leaves a
freeze made earlier by someone else alone.
"""

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_lock = threading.Lock()
_depth = 0  # blocks open, in any thread
_owned = False  # whether the outermost open block froze (and so unfreezes at its end)


@contextmanager
def existing_objects_frozen() -> Iterator[None]:
    """Within the block, no collection walks the objects tracked when the outermost block began.

    Nests and may be entered from several threads at once: the outermost block freezes and the last
    one to end unfreezes. When something else in the process has frozen objects already
    (``gc.get_freeze_count() > 0`` at the outermost start), the block does nothing, so that freeze
    is left as it was; a ``gc.freeze()`` or ``gc.unfreeze()`` made by someone else *during* the block
    is not guarded against (``gc.unfreeze()`` releases every frozen object). An exception inside the
    block (or an interrupt) still ends it. Raises nothing of its own.
    """
    global _depth, _owned
    entered = False
    try:
        with _lock:
            if _depth == 0:
                _owned = gc.get_freeze_count() == 0
                if _owned:
                    gc.freeze()
            _depth += 1
            entered = True
        yield
    finally:
        if entered:
            with _lock:
                _depth -= 1
                if _depth == 0 and _owned:
                    gc.unfreeze()
                    _owned = False
