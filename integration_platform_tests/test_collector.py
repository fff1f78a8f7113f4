"""``existing_objects_frozen``: full collections skip what a step inherits, and nothing is leaked."""

import gc
import threading
import weakref

import pytest

from integration_platform.core.collector import existing_objects_frozen

pytestmark = pytest.mark.fast


class _Node:
    """A cyclic object: only the cyclic collector frees it."""

    def __init__(self) -> None:
        self.me = self


@pytest.fixture(autouse=True)
def _nothing_frozen() -> None:
    assert gc.get_freeze_count() == 0, "another test left objects frozen"


def test_an_inherited_cycle_is_skipped_inside_and_freed_after() -> None:
    node = _Node()
    ref = weakref.ref(node)
    with existing_objects_frozen():
        assert gc.get_freeze_count() > 0
        del node
        gc.collect()
        assert ref() is not None, "a full collection inside the block walked an inherited object"
        young = _Node()
        young_ref = weakref.ref(young)
        del young
        gc.collect()
        assert young_ref() is None, "an object created inside the block must be collected as usual"
    assert gc.get_freeze_count() == 0
    gc.collect()
    assert ref() is None, "the inherited cycle leaked: it was not handed back to the collector"


def test_nested_blocks_unfreeze_at_the_outermost_end() -> None:
    with existing_objects_frozen():
        frozen = gc.get_freeze_count()
        with existing_objects_frozen():
            pass
        assert gc.get_freeze_count() == frozen
    assert gc.get_freeze_count() == 0


def test_blocks_in_two_threads_unfreeze_when_the_last_ends() -> None:
    first_in, second_in, first_out = threading.Event(), threading.Event(), threading.Event()
    seen: dict[str, int] = {}

    def first() -> None:
        with existing_objects_frozen():
            first_in.set()
            seen["second_entered"] = second_in.wait(10)
        first_out.set()

    def second() -> None:
        seen["first_entered"] = first_in.wait(10)
        with existing_objects_frozen():
            second_in.set()
            seen["first_left"] = first_out.wait(10)
            seen["after_first_left"] = gc.get_freeze_count()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert seen["first_entered"] and seen["second_entered"] and seen["first_left"], "the blocks did not overlap"
    assert seen["after_first_left"] > 0, "the first thread to leave unfroze under the second"
    assert gc.get_freeze_count() == 0


def test_a_failure_inside_ends_the_block() -> None:
    with pytest.raises(RuntimeError, match="the step failed"), existing_objects_frozen():
        raise RuntimeError("the step failed")
    assert gc.get_freeze_count() == 0, "a failed block left the objects frozen"
    with existing_objects_frozen():
        assert gc.get_freeze_count() > 0, "after a failed block, the next one no longer freezes"
    assert gc.get_freeze_count() == 0


def test_a_freeze_made_by_someone_else_is_left_as_it_was() -> None:
    gc.freeze()
    try:
        theirs = gc.get_freeze_count()
        node = _Node()
        with existing_objects_frozen():
            assert gc.get_freeze_count() == theirs, "the block froze on top of someone else's freeze"
        assert gc.get_freeze_count() == theirs, "the block unfroze someone else's freeze"
        del node
    finally:
        gc.unfreeze()
