"""The queue directory run directly (no Ray) on a real SQLite store: queues are
created explicitly, per owner, within a quota, and named so that no user's
queue can take an internal actor's name."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from actors.queue.directory import DIRECTORY_NAME, QueueDirectory
from actors.queue.errors import QueueNotFound
from actors.queue.model import INTERNAL_PREFIX, USER_PREFIX
from actors.queue.settings import QueueSettings
from actors.queue.workers import SLOTS_NAME
from actors.runtime.clock import FakeClock
from actors.runtime.errors import InvalidInput, LimitReached
from actors.runtime.store import SQLiteStore

OpenDirectory = Callable[..., Awaitable[QueueDirectory]]


@pytest.fixture
async def open_directory(clock: FakeClock, store: SQLiteStore) -> AsyncIterator[OpenDirectory]:
    async def open_(*, snapshot_every: int = 10_000, **config: object) -> QueueDirectory:
        directory = QueueDirectory(QueueSettings(**config), clock=clock)  # type: ignore[arg-type]
        await directory.open(
            store, DIRECTORY_NAME, snapshot_every=snapshot_every, on_failure=lambda error: None
        )
        return directory

    yield open_


async def test_a_queue_is_its_owners_and_others_do_not_see_it(open_directory) -> None:
    directory = await open_directory()
    entry, created = await directory.create("ada", "emails", key="k1")
    assert created and (entry["queue"], entry["owner"]) == ("emails", "ada")
    again, created = await directory.create("ada", "emails", key="k2")
    assert not created and again == entry  # creating it again finds it
    with pytest.raises(QueueNotFound):
        directory.find("bob", "emails")
    assert await directory.list_queues("bob") == []
    # bob's queue of the same name is another queue, with another actor
    bobs, created = await directory.create("bob", "emails", key="k3")
    assert created and bobs["actor"] != entry["actor"]
    assert [q["queue"] for q in await directory.list_queues("ada")] == ["emails"]


async def test_an_owner_holds_at_most_the_quota(open_directory) -> None:
    directory = await open_directory(max_queues_per_owner=2, snapshot_every=2)
    await directory.create("ada", "a", key="1")
    await directory.create("ada", "b", key="2")
    with pytest.raises(LimitReached):
        await directory.create("ada", "c", key="3")
    assert await directory.count("ada") == 2
    await directory.create("ada", "a", key="4")  # an existing one is found, not counted
    await directory.create("bob", "c", key="5")  # others are not held back
    # what ``delete`` journals, after stopping the queue's actor (which needs Ray)
    await directory.execute("delete", owner="ada", name="a")
    await directory.execute("delete", owner="ada", name="b")
    await directory.create("ada", "c", key="6")
    # a restart (snapshot and records) brings back the same queues and the same count
    if directory._snapshot_task is not None:  # the first incarnation is done writing
        await directory._snapshot_task
    again = await open_directory(max_queues_per_owner=2, snapshot_every=2)
    assert [q["queue"] for q in await again.list_queues("ada")] == ["c"]
    assert [q["queue"] for q in await again.list_queues("bob")] == ["c"]


async def test_a_retried_create_answers_as_the_first(open_directory) -> None:
    directory = await open_directory(max_queues_per_owner=1)
    first, created = await directory.create("ada", "a", key="same")
    assert created
    assert await directory.create("ada", "a", key="same") == (first, True)


@pytest.mark.parametrize("name", ["slots", "directory", "queue-slots", "x/y", "", "-a", "a" * 65])
async def test_no_queue_name_makes_an_internal_actors_name(open_directory, name: str) -> None:
    directory = await open_directory()
    try:
        entry, _ = await directory.create("ada", name, key=name)
    except InvalidInput:
        return  # not a queue name at all
    actor = entry["actor"]
    assert actor.startswith(USER_PREFIX) and not actor.startswith(INTERNAL_PREFIX)
    assert actor not in (SLOTS_NAME, DIRECTORY_NAME)
    assert SLOTS_NAME.startswith(INTERNAL_PREFIX) and DIRECTORY_NAME.startswith(INTERNAL_PREFIX)


async def test_a_queue_made_again_after_a_delete_is_a_new_actor(open_directory) -> None:
    directory = await open_directory()
    first, _ = await directory.create("ada", "a", key="1")
    await directory.execute("delete", owner="ada", name="a")
    second, created = await directory.create("ada", "a", key="2")
    assert created and second["actor"] != first["actor"]


async def test_an_owner_is_a_user_id(open_directory) -> None:
    directory = await open_directory()
    for owner in ("", "x" * 200, None):
        with pytest.raises(InvalidInput):
            await directory.create(owner, "a")  # type: ignore[arg-type]
