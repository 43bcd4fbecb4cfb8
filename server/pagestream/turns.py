"""Turns of the event loop, shared out: only a few pieces of costly work begin in each."""

from __future__ import annotations

import asyncio
import collections

#: Pieces of work (a request's start, a stream's opening) that may begin in one turn.
PER_TURN = 4


class Turns:
    """At most ``per_turn`` pieces of costly work begin in one turn of the event loop.

    uvicorn starts the request of every connection a poll returned in the same turn, and each
    runs the middleware, routing, authentication and its handler up to the first wait before it
    yields: 65 watchers opening a running job's stream in the same instant held the loop for
    20 ms, and every stream's writes and every other request waited. Their reads of the job
    then come back from the store's threads together, and each stream's opening (its snapshot
    and catch-up) ran in one turn again. Every request begins through here (app.Turnstile), and
    a stream's opening does too: past ``per_turn`` in a turn, work waits for a later turn, in
    order of arrival, a group per turn.
    """

    def __init__(self, per_turn: int = PER_TURN) -> None:
        self.per_turn = per_turn
        self._begun = 0  # begun in this turn
        self._waiting: collections.deque[asyncio.Future[None]] = collections.deque()
        self._turn_ends = False

    async def wait(self) -> None:
        """Return in a turn that still has room: this one, or a later one."""
        if self._waiting or self._begun >= self.per_turn:
            future = asyncio.get_running_loop().create_future()
            self._waiting.append(future)
            self._end_turn_soon()
            await future  # cancelled: its client left; the turn lets the next one through
        self._begun += 1
        self._end_turn_soon()

    def _end_turn_soon(self) -> None:
        if not self._turn_ends:
            self._turn_ends = True
            asyncio.get_running_loop().call_soon(self._next_turn)

    def _next_turn(self) -> None:
        self._turn_ends = False
        let_in = 0
        while self._waiting and let_in < self.per_turn:
            future = self._waiting.popleft()
            if not future.done():
                future.set_result(None)
                let_in += 1
        self._begun = let_in  # they begin in the next turn; count them against it
        if self._waiting or let_in:
            self._end_turn_soon()
