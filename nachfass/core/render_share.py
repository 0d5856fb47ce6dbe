"""The mails both replays of a backtest render alike, rendered once.

A rule change alters the mails of a campaign or two; the others go out alike on both sides: the same
recipient, trigger, variant and payload at the same tick, rendered by the same templates with the same
campaign settings, so into the same mail. Rendering is CPU work under the GIL, so the two sides' rendering
does not overlap: a tick sending thousands of mails (the daily campaigns, the first tick's backlog) took
each side's rendering time twice (docs/benchmarks.md). Here the first side to reach such a mail renders it
and the other side takes the result; a mail that differs in anything the renderer reads (a changed
segment's payload, a campaign whose settings differ between the rule sets) is rendered by its own side.

Both sides walk their mails in the same order (by send id), a chunk at a time: the first side to reach a
chunk claims its mails and renders them as one batch (in the share's worker processes, ``RenderPool``, when
the chunk is large), the other takes them. A render that fails raises on both sides (it would have failed
on both); a side that stops for another reason leaves the mails to the other side to render itself.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import Future
from datetime import datetime

from nachfass.core.mail.message import MailJob, RenderedMail
from nachfass.core.mail.render import MailRenderer, RenderError
from nachfass.core.mail.render_pool import RenderPool


class SharedRenders:
    """One per backtest: ``register`` each side's renderer before its ticks, then render each tick's mails
    through ``at(side, tick)`` instead of the side's own renderer."""

    def __init__(self, sides: tuple[str, ...], pool: RenderPool | None = None) -> None:
        """``pool``: where the sides render their large batches (both through the same workers)."""
        self.sides = sides
        self.pool = pool
        self._renderers: dict[str, MailRenderer] = {}
        self._shared: frozenset[str] | None = None
        self._lock = threading.Lock()
        # (tick, the job) -> the mail, and the sides that have taken it
        self._mails: dict[tuple[datetime, str], tuple[Future[RenderedMail], set[str]]] = {}
        self._tick: dict[str, datetime] = {}
        # per side (each written by its side's thread only): "rendered": mails rendered for both sides,
        # "taken": a mail the other side rendered, "own": mails of a campaign whose settings differ
        self._counts: dict[str, Counter[str]] = {side: Counter() for side in sides}

    def register(self, side: str, renderer: MailRenderer) -> None:
        with self._lock:
            self._renderers[side] = renderer
            self._shared = None

    def shared_campaigns(self) -> frozenset[str]:
        """The campaigns every side renders alike: the same settings, templates, shop and link key."""
        with self._lock:
            if self._shared is None:
                if set(self._renderers) != set(self.sides):
                    return frozenset()  # not every side has registered yet: nothing is shared
                first, *others = (self._renderers[side] for side in self.sides)
                alike = all(
                    other.templates_dir == first.templates_dir
                    and other.shop == first.shop
                    and other.signer.same_key(first.signer)
                    for other in others
                )
                # the settings' values: not where they were read from (each side's project folder)
                self._shared = frozenset(
                    campaign
                    for campaign, settings in first.campaigns.items()
                    if alike
                    and all(
                        campaign in other.campaigns
                        and other.campaigns[campaign].model_dump() == settings.model_dump()
                        for other in others
                    )
                )
            return self._shared

    def at(self, side: str, renderer: MailRenderer, tick: datetime) -> TickRenders:
        """``renderer`` (the side's, at ``tick``) rendering the mails of ``tick``, sharing what is alike.
        Forgets the mails no other side will take: those of ticks the sides that lack them have gone past
        (a mail only one rule set sends is held at most until the other side's next tick)."""
        self._tick[side] = tick
        for key, (_, sides) in list(self._mails.items()):
            if self._past(key[0], sides):
                self._mails.pop(key, None)
        return TickRenders(self, side, renderer, tick, self.shared_campaigns())

    def _past(self, tick: datetime, having: set[str]) -> bool:
        """Whether every side but ``having`` has gone past ``tick`` (so takes none of its mails)."""
        return all(
            side in self._tick and self._tick[side] > tick for side in self.sides if side not in having
        )

    @property
    def held(self) -> int:
        """How many rendered mails are held for a side that may still take them."""
        return len(self._mails)

    @property
    def counts(self) -> Counter[str]:
        return sum(self._counts.values(), Counter())

    def claim(self, side: str, tick: datetime, job: MailJob) -> tuple[Future[RenderedMail], bool]:
        """The future of ``job``'s mail at ``tick``, and whether this side renders it (the first to claim
        it)."""
        key = (tick, repr(job))  # every field of the job, the payload in its JSON's order
        # No lock: a lock both sides take for every mail made each wait for the other's turn at the GIL.
        # A dict's setdefault, pop and a set's add are atomic under the GIL; a race on _past at most holds
        # a mail no side takes until the next tick's at().
        new: tuple[Future[RenderedMail], set[str]] = (Future(), {side})
        entry = self._mails.get(key)
        if entry is None:  # held only while another side may take it
            entry = self._mails.setdefault(key, new) if not self._past(tick, new[1]) else new
        mine = entry is new
        if not mine:
            entry[1].add(side)
            if entry[1] >= set(self.sides):
                self._mails.pop(key, None)  # every side has it
        return entry[0], mine

    def count(self, side: str, what: str, n: int = 1) -> None:
        self._counts[side][what] += n


class TickRenders:
    """A side's renderer for one tick whose ``render_batch`` shares the mails rendered alike."""

    def __init__(
        self, share: SharedRenders, side: str, renderer: MailRenderer, tick: datetime, shared: frozenset[str]
    ) -> None:
        self._share, self._side, self._renderer, self._tick = share, side, renderer, tick
        self._shared_campaigns = shared

    def render_batch(self, jobs: Iterable[MailJob]) -> list[RenderedMail]:
        """All or nothing, as ``MailRenderer.render_batch``. The mails of the batch no side has claimed yet
        are claimed at once and rendered as one batch (through the share's ``RenderPool`` when it has one),
        then the mails the other side claimed are taken from it."""
        share, side = self._share, self._side
        jobs = list(jobs)
        shared = self._shared_campaigns
        claims = [share.claim(side, self._tick, job) if job.campaign in shared else None for job in jobs]
        here = [i for i, claim in enumerate(claims) if claim is None or claim[1]]
        try:
            rendered = self._render([jobs[i] for i in here])
        except BaseException as exc:
            for i in here:  # the other side, waiting for one of these, fails alike (or renders it itself)
                if claims[i] is not None:
                    claims[i][0].set_exception(exc)
            raise
        mails: list[RenderedMail | None] = [None] * len(jobs)
        for i, mail in zip(here, rendered, strict=True):
            mails[i] = mail
            if claims[i] is not None:
                claims[i][0].set_result(mail)
        share.count(side, "rendered", sum(claims[i] is not None for i in here))
        share.count(side, "own", sum(claims[i] is None for i in here))
        for i, claim in enumerate(claims):
            if claim is None or claim[1]:
                continue
            try:
                mails[i] = claim[0].result()
            except RenderError:
                raise  # the same batch fails the same way here
            except BaseException:  # noqa: BLE001 - the other side stopped: render it here
                mails[i] = self._render([jobs[i]])[0]
                share.count(side, "own")
                continue
            share.count(side, "taken")
        return mails  # type: ignore[return-value]

    def _render(self, jobs: list[MailJob]) -> list[RenderedMail]:
        pool = self._share.pool
        if pool is None:
            return self._renderer.render_batch(jobs)
        return pool.render_batch(self._renderer, jobs)
