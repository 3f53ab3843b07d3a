"""The game's browser client (``/game/``) in a real browser: Playwright driving
Debian's chromium against the deployment of the integration session.

Two pages sign in as two players through the page's own forms, join the same
room (one creates it, the other finds it in the room list), and see each other
move; one walks onto the gold pile next to the meadow's spawn points and the
balance shown updates (and matches the ledger's, asked over HTTP); a chat
line typed in one page shows in the other; reloading the page reconnects to
the same seat; and when the room's actor is killed both pages get a fresh
full state and play on. Any JavaScript or console error (a CSP violation
included) fails the test. Screenshots are saved under
``test-artifacts/game-browser/`` (``REALM_TEST_ARTIFACTS`` moves it).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import ray

from actors.runtime.settings import Settings
from tests.conftest import ROOT, until
from tests.integration.conftest import service_client

#: Debian's chromium (Playwright cannot download its own browsers here).
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="chromium is not installed (`make test` installs Debian's package with apt)",
)

ARTIFACTS = Path(os.environ.get("REALM_TEST_ARTIFACTS", ROOT / "test-artifacts")) / "game-browser"
PASSWORD = "correct horse battery staple"
#: The meadow's gold pile beside its spawn points (actors/game/maps/meadow.json).
GOLD_PILE = (7, 4)
GOLD_PILE_AMOUNT = 5
#: The entity ids of the players a page lists.
PLAYER_IDS = "[...document.querySelectorAll('#players li')].map(li => li.dataset.id)"
#: A page's wait for what a person would see within a second or two.
SEE_S = 20.0


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=CHROMIUM)
        try:
            yield launched
        finally:
            await launched.close()


def room_actor(namespace: str, room: str) -> Any:
    """The actor of ``room`` (named after it in the deployment's namespace)."""
    for actor in ray.util.list_named_actors(all_namespaces=True):
        if actor["namespace"] == namespace and actor["name"].endswith(room):
            return ray.get_actor(actor["name"], namespace=namespace)
    raise AssertionError(f"no actor for room {room}")


class Player:
    """One browser page playing the game, with what it logged."""

    def __init__(self, page: Any, role: str, tag: str) -> None:
        self.page = page
        self.role = role
        self.name = f"{role}{tag}"  #: user and character name
        self.problems: list[str] = []
        page.on("pageerror", lambda error: self.problems.append(f"page error: {error}"))
        page.on(
            "console",
            lambda message: (
                self.problems.append(f"console: {message.text}")
                if message.type == "error"
                else None
            ),
        )

    async def snap(self, what: str) -> None:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        await self.page.screenshot(path=str(ARTIFACTS / f"{what}-{self.role}.png"))

    async def value(self, script: str, arg: Any = None) -> Any:
        return await self.page.evaluate(script, arg)

    async def view(self) -> str:
        return str(await self.value("document.body.dataset.view || ''"))

    async def me(self) -> str:
        return str(await self.value("document.getElementById('canvas').dataset.me || ''"))

    async def players(self) -> dict[str, tuple[int, int]]:
        """The players the page lists beside the canvas: name -> tile."""
        rows = await self.value(
            """[...document.querySelectorAll('#players li')].map(
                li => [li.dataset.name, Number(li.dataset.x), Number(li.dataset.y)])"""
        )
        return {name: (x, y) for name, x, y in rows}

    async def ids(self) -> list[str]:
        rows = await self.value(PLAYER_IDS)
        return list(rows)

    async def fulls(self) -> int:
        """Full states the page has had since it loaded (a join, a resync)."""
        return int(await self.value("Number(document.getElementById('canvas').dataset.fulls || 0)"))

    async def gold(self) -> str:
        return str(await self.value("document.getElementById('gold').dataset.gold"))

    async def sign_up(self, base_url: str) -> None:
        page = self.page
        await page.goto(f"{base_url}/game/")
        await page.wait_for_selector("#signin-view:not([hidden])")
        await page.fill("#username", self.name)
        await page.fill("#password", PASSWORD)
        await page.click("#register")
        await page.wait_for_selector("#characters-view:not([hidden])")

    async def create_character(self, cls: str) -> None:
        page = self.page
        await page.wait_for_selector(f"#character-class option[value={cls}]", state="attached")
        await page.fill("#character-name", self.name[:20])
        await page.select_option("#character-class", cls)
        await page.click("#create-character")
        await page.wait_for_selector("#rooms-view:not([hidden])")

    async def entered(self) -> str:
        """Wait until the page shows the game with a full state; its own entity id."""
        await self.page.wait_for_selector("#game-view:not([hidden])")
        me: str = await until(self.me, what=f"{self.name}'s full state", within_s=SEE_S)
        return me

    async def hold(self, keys: set[str], held: set[str]) -> None:
        for key in held - keys:
            await self.page.keyboard.up(key)
        for key in keys - held:
            await self.page.keyboard.down(key)
        held.clear()
        held.update(keys)

    async def walk_to(self, x: int, y: int) -> None:
        """Hold the arrow keys towards (x, y) until the page shows its player there."""
        held: set[str] = set()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SEE_S
        try:
            while True:
                here = (await self.players())[self.name]
                if here == (x, y):
                    return
                if loop.time() > deadline:
                    raise AssertionError(f"{self.name} never reached {(x, y)} (at {here})")
                keys = set()
                if here[0] != x:
                    keys.add("ArrowRight" if x > here[0] else "ArrowLeft")
                if here[1] != y:
                    keys.add("ArrowDown" if y > here[1] else "ArrowUp")
                await self.hold(keys, held)
                await asyncio.sleep(0.03)
        finally:
            await self.hold(set(), held)


async def sees_move(viewer: Player, mover: Player, start: tuple[int, int]) -> None:
    """Wait until ``viewer``'s page shows ``mover`` where ``mover``'s own page has
    it, away from ``start``."""

    async def both() -> tuple[Any, Any]:
        seen = (await viewer.players()).get(mover.name)
        return seen, (await mover.players()).get(mover.name)

    await until(
        both,
        lambda pair: pair[0] == pair[1] and pair[0] != start,
        what=f"{viewer.role} sees {mover.role} move from {start}",
        within_s=SEE_S,
    )


async def test_two_browsers_play_together(
    browser: Any, base_url: str, http_settings: Settings
) -> None:
    tag = uuid.uuid4().hex[:6]
    contexts = [await browser.new_context(viewport={"width": 1200, "height": 800}) for _ in "ab"]
    ana = Player(await contexts[0].new_page(), "ana", tag)
    bo = Player(await contexts[1].new_page(), "bo", tag)
    try:
        await asyncio.gather(ana.sign_up(base_url), bo.sign_up(base_url))
        await asyncio.gather(ana.create_character("warrior"), bo.create_character("archer"))

        # Ana creates a public meadow room with a label; Bo finds it in the list.
        label = f"test {tag}"
        await ana.page.select_option("#room-zone", "meadow")
        await ana.page.fill("#room-label", label)
        await ana.page.click("#create-room")
        ana_me = await ana.entered()
        await bo.page.click("#refresh-rooms")
        join = bo.page.locator(f'#rooms li[data-label="{label}"] button')
        await join.wait_for()
        await join.click()
        bo_me = await bo.entered()
        assert ana_me != bo_me

        # Each sees the other.
        await until(ana.players, lambda p: bo.name in p, what="Ana sees Bo", within_s=SEE_S)
        await until(bo.players, lambda p: ana.name in p, what="Bo sees Ana", within_s=SEE_S)
        assert (await ana.value("document.getElementById('tick').textContent")).isdigit()
        await ana.snap("1-joined")

        # Room chat: what Ana says shows in Bo's page.
        await ana.page.press("#canvas", "Enter")
        await ana.page.keyboard.type(f"hello from {ana.name}")
        await ana.page.keyboard.press("Enter")
        await bo.page.wait_for_selector(f'#chat li:has-text("hello from {ana.name}")')

        # Bo takes a step; Ana sees it. (Monsters roam the meadow: a player may die
        # and come back at a spawn point, so what is checked is that each page shows
        # the other where that other's own page has it, once it moved.)
        bo_from = (await bo.players())[bo.name]
        await bo.walk_to(bo_from[0], bo_from[1] + 1)  # below every spawn point lies floor
        await sees_move(ana, bo, bo_from)

        # Ana walks onto the gold pile; Bo sees her move and her balance grows by it.
        before = await until(ana.gold, lambda g: g.isdigit(), what="Ana's gold shown")
        ana_from = (await ana.players())[ana.name]
        await ana.walk_to(*GOLD_PILE)
        after = int(before) + GOLD_PILE_AMOUNT
        await until(ana.gold, lambda g: g == str(after), what="Ana's gold updated", within_s=SEE_S)
        await sees_move(bo, ana, ana_from)
        token = await ana.value("sessionStorage.getItem('realm.token')")
        async with service_client(base_url, "game", {"authorization": f"Bearer {token}"}) as game:
            answer = await game.get("/gold")
            assert answer.status_code == 200, answer.text
            assert answer.json()["balance"] == after
        await asyncio.gather(ana.snap("2-looted"), bo.snap("2-looted"))

        # Ana reloads: the page reconnects to the same seat (the same entity).
        await ana.page.reload()
        assert await ana.entered() == ana_me
        assert await until(ana.gold, lambda g: g.isdigit(), what="gold after reload") == str(after)
        # Bo still sees one Ana, the same entity, and each sees the other.
        await until(bo.ids, lambda ids: sorted(ids) == sorted([ana_me, bo_me]), what="one Ana")
        await until(ana.players, lambda p: bo.name in p, what="Ana sees Bo again")
        await ana.snap("3-reloaded")

        # And she still plays: a step after the reload reaches Bo.
        ana_from = (await ana.players())[ana.name]
        await ana.walk_to(ana_from[0] + 1, ana_from[1])  # right of the spawns and the pile: floor
        await sees_move(bo, ana, ana_from)

        # The room's actor is killed: both pages get a fresh full state and play on.
        room = await ana.value("sessionStorage.getItem('realm.room')")
        fulls = [await player.fulls() for player in (ana, bo)]
        ray.kill(room_actor(http_settings.namespace, room), no_restart=False)
        for player, before in zip((ana, bo), fulls, strict=True):
            await until(player.fulls, lambda n, b=before: n > b, what=f"{player.role} resynced")
        assert await ana.me() == ana_me and await bo.me() == bo_me
        ana_from = (await ana.players())[ana.name]
        await ana.walk_to(ana_from[0], ana_from[1] + 1)
        await sees_move(bo, ana, ana_from)
        await ana.snap("4-after-crash")
        # A join or a resync replays the room's recent chat: a page shows a line once.
        count = "[...document.querySelectorAll('#chat li')].length"
        assert await bo.value(count) == 1 and await ana.value(count) <= 1
        assert ana.problems == [] and bo.problems == [], ana.problems + bo.problems
    except BaseException:
        # What each page showed when the test failed: a screenshot and its HUD.
        for player in (ana, bo):
            with contextlib.suppress(Exception):
                await player.snap("failed")
                hud = await player.value("document.getElementById('hud').innerText")
                print(f"{player.role}: {hud!r}; problems: {player.problems}")
        raise
    finally:
        for context in contexts:
            await context.close()
