"""Running an ASGI app in process as a server would: its lifespan around a block."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.types import ASGIApp, Message


@asynccontextmanager
async def lifespan(app: ASGIApp) -> AsyncIterator[None]:
    """Run the app's lifespan (its archive open) as a server would, around the block.
    httpx.ASGITransport alone never runs it."""
    inbox: asyncio.Queue[Message] = asyncio.Queue()
    reached = {"startup": asyncio.Event(), "shutdown": asyncio.Event()}

    async def send(message: Message) -> None:
        phase, _, outcome = message["type"].removeprefix("lifespan.").partition(".")
        assert outcome == "complete", message
        reached[phase].set()

    scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
    task = asyncio.ensure_future(app(scope, inbox.get, send))
    for phase, complete in reached.items():
        await inbox.put({"type": f"lifespan.{phase}"})
        await asyncio.wait_for(complete.wait(), 10)
        if phase == "startup":
            yield
    await asyncio.wait_for(task, 10)
