"""A worker's campaign engine: one greenlet that dials the running campaigns' contacts.

Owns: the poll loop (every campaigns.poll_s: its heartbeat, now and then the recovery of
attempts whose engine died, then for each running campaign a claim of what may be dialled now
— the database decides, relay/campaigns/store.py — and a dial of each claim through the
worker's Dialer); writing each dial's originate time and outcome back (the callback runs on the
hub: the write goes to gevent's thread pool, retried while the database is unreachable); and a
clean stop: no new claims, the live dials' outcomes written, then this engine's attempts still
open closed as `interrupted` (the retry policy decides a new attempt; never the same one again).

A failure of one claim, dial or write is logged and counted; it never reaches the worker or a
call. Pause and stop are state changes in the database: this engine just stops claiming.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from typing import TYPE_CHECKING, Any, Callable

import gevent

from relay.ari import AriError
from relay.campaigns.store import Claim
from relay.history.store import StoreUnavailable
from relay.outbound.dialer import DialError
from relay.outbound.outcomes import DialOutcome, DialRequest

if TYPE_CHECKING:
    from relay.worker import Worker

log = logging.getLogger(__name__)

WRITE_TRIES = 8
CHANNEL_GONE_WAIT_S = 5.0       # the longest an outcome waits for its channel to be gone
CHANNEL_GONE_POLL_S = 0.05
STOP_JOIN_S = 2.0


def engine_id(app: str) -> str:
    """This engine's name in the attempts it claims: host, ARI app, process, and a random
    part (a restarted worker is a new engine: the old one's open claims are recovered)."""
    return f"{socket.gethostname()}:{app}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class CampaignEngine:
    """start() spawns the loop; stop_claiming() then stop(timeout) at the worker's stop."""

    def __init__(self, worker: "Worker", store: Any) -> None:
        self.worker = worker
        self.store = store          # relay.campaigns.service.SharedCampaigns
        self.settings = worker.settings.tree["campaigns"]
        self.id = engine_id(worker.settings.tree["ari"]["app"])
        self.claiming = False
        self._loop: gevent.Greenlet | None = None
        self._writes: set[gevent.Greenlet] = set()
        self.counters = {"claims": 0, "dials": 0, "refused": 0, "outcomes": 0,
                         "recovered": 0, "errors": 0}

    def _blocking(self, fn: Callable[..., Any], *args: Any) -> Any:
        return gevent.get_hub().threadpool.apply(fn, args)

    # life cycle
    def start(self) -> None:
        self.claiming = True
        self._loop = gevent.spawn(self._run)
        log.info("campaigns: engine %s started", self.id)

    def stop_claiming(self) -> None:
        self.claiming = False

    def stop(self, timeout: float = 5.0) -> None:
        """No new claims; wait for the outcome writes; close this engine's open attempts."""
        self.claiming = False
        if self._loop is not None:
            self._loop.join(STOP_JOIN_S)
            self._loop.kill(block=True, timeout=STOP_JOIN_S)
        gevent.joinall(list(self._writes), timeout=max(0.1, timeout))
        try:
            closed = self._blocking(self.store.recover, 0.0, 0.0, self.id)
            if closed:
                log.info("campaigns: %d attempt(s) of this engine closed as interrupted", closed)
        except Exception as exc:
            log.warning("campaigns: cannot close this engine's open attempts (%s); another "
                        "engine will once its heartbeat is old", exc)
        gevent.killall(list(self._writes), block=True, timeout=1)

    # the loop
    def _run(self) -> None:
        poll = self.settings["poll_s"]
        last_beat = last_recovery = -1e18
        while self.claiming:
            try:
                now = time.monotonic()
                if now - last_beat >= self.settings["heartbeat_s"]:
                    self._blocking(self.store.heartbeat, self.id)
                    last_beat = now
                if now - last_recovery >= self.settings["recover_every_s"]:
                    recovered = self._blocking(self.store.recover,
                                               self.settings["stale_after_s"],
                                               self.settings["engine_timeout_s"])
                    self.counters["recovered"] += recovered
                    last_recovery = now
                self._claim_and_dial()
            except gevent.GreenletExit:
                raise
            except Exception as exc:
                self.counters["errors"] += 1
                level = logging.WARNING if isinstance(exc, StoreUnavailable) else logging.ERROR
                log.log(level, "campaigns: poll failed: %s", exc,
                        exc_info=not isinstance(exc, StoreUnavailable))
                gevent.sleep(min(5.0, poll * 10))
            gevent.sleep(poll)

    def _claim_and_dial(self) -> None:
        for campaign_id in self._blocking(self.store.running):
            room = self.worker.settings.tree["outbound"]["max_pending"] - \
                len(self.worker.dialer.pending)
            if not self.claiming or not self.worker.accepting or room <= 0:
                return
            claims = self._blocking(self.store.claim, campaign_id, self.id, room)
            self.counters["claims"] += len(claims)
            for claim in claims:
                if not self.claiming:   # stopping: stop() closes the rest as interrupted
                    return
                self._dial(claim)

    def _dial(self, claim: Claim) -> None:
        request = DialRequest(endpoint=claim.endpoint, agent=claim.agent,
                              caller_id=claim.caller_id, ring_timeout_s=claim.ring_timeout_s,
                              variables=dict(claim.variables), amd=claim.amd,
                              campaign_id=claim.campaign_id, attempt=claim.attempt)
        try:
            outcome = self.worker.dialer.dial(request,
                                              on_outcome=lambda o: self._outcome(claim, o))
        except DialError as exc:
            self.counters["refused"] += 1
            log.warning("campaigns: %s contact %d attempt %d refused: %s", claim.campaign_id,
                        claim.seq, claim.attempt, exc)
            self._write(self.store.finish, claim.campaign_id, claim.seq, claim.attempt,
                        "failed", f"relay refused the dial: {exc}")
            return
        except Exception as exc:    # never the worker's problem; the attempt is closed
            self.counters["errors"] += 1
            log.exception("campaigns: dialling %s failed", claim.endpoint)
            self._write(self.store.finish, claim.campaign_id, claim.seq, claim.attempt,
                        "failed", f"internal error: {exc}")
            return
        self.counters["dials"] += 1
        # Asterisk has the originate by now: the pace counts this attempt from this moment
        self._write(self.store.mark_originated, claim.campaign_id, claim.seq, claim.attempt,
                    time.time(), outcome.channel_id)

    def _outcome(self, claim: Claim, outcome: DialOutcome) -> None:
        """The dial's final outcome (on the hub). A dial cut by this worker's own stop is
        `interrupted` (the retry policy's), not `failed`. Written from the thread pool once
        Asterisk no longer has the channel (relay may have just asked for its hangup: until it
        is gone it is still one of the campaign's calls in flight)."""
        self.counters["outcomes"] += 1
        result = outcome.outcome or "failed"
        if result == "failed" and not self.worker.accepting:
            result = "interrupted"
        greenlet = gevent.spawn(self._finish_when_gone, claim, result, outcome.reason,
                                outcome.channel_id)
        self._writes.add(greenlet)
        greenlet.link(self._writes.discard)

    def _finish_when_gone(self, claim: Claim, result: str, reason: str,
                          channel_id: str) -> None:
        deadline = time.monotonic() + CHANNEL_GONE_WAIT_S
        while channel_id and time.monotonic() < deadline:
            try:
                self.worker.ari.get_channel(channel_id)
            except AriError as exc:
                if exc.status == 404:
                    break
            gevent.sleep(CHANNEL_GONE_POLL_S)
        self._write_now(self.store.finish, claim.campaign_id, claim.seq, claim.attempt,
                        result, reason, channel_id)

    def _write(self, fn: Callable[..., Any], *args: Any) -> None:
        greenlet = gevent.spawn(self._write_now, fn, *args)
        self._writes.add(greenlet)
        greenlet.link(self._writes.discard)

    def _write_now(self, fn: Callable[..., Any], *args: Any) -> None:
        delay = 0.1
        for tries in range(1, WRITE_TRIES + 1):
            try:
                self._blocking(fn, *args)
                return
            except StoreUnavailable as exc:
                if tries == WRITE_TRIES:
                    self.counters["errors"] += 1
                    log.error("campaigns: cannot write %s%r (%s); the attempt will be "
                              "recovered as interrupted", getattr(fn, "__name__", fn), args, exc)
                    return
                gevent.sleep(delay)
                delay = min(delay * 2, 5.0)
            except Exception:
                self.counters["errors"] += 1
                log.exception("campaigns: writing %s%r failed", getattr(fn, "__name__", fn),
                              args)
                return
