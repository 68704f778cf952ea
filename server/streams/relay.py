"""Named streams across instances through Redis pub/sub (`--redis-url`); docs/scaling-streams.md.

Why it is shaped this way:
- The hub's hooks run in the producer's result path, so they only append to a bounded queue. One
  writer task does every Redis write in order (claims, results, ends): a stream's start, results
  and end reach its channel in the order they happened, and a slow or dead Redis costs the
  producer nothing but the remote copies.
- A producer name is claimed with an expiring key, refreshed while live, so an instance that dies
  frees its names by itself. Claim and release are Lua scripts that also publish the start or end
  event: the key and the event can never disagree.
- One reader task holds the pub/sub connection and listens only to streams that have subscribers
  here and no producer here. It reconnects with bounded backoff and tells waiting subscribers
  `stream_unavailable` while it cannot.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import deque
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from holistream import protocol
from server.streams.hub import StreamHub, Subscriber, stream_ended, stream_started
from server.streams.redis_wire import (
    CHANNEL,
    CLAIM,
    CONTROL,
    ID_LEN,
    META,
    PRODUCER,
    RELEASE,
    RIG,
    Remote,
    result_as_json,
)

log = logging.getLogger("holistream.redis")

ERRORS = (RedisError, OSError)
QUEUE_MAX = 256
BACKOFF_S = (0.1, 2.0)
UNAVAILABLE = protocol.error_message(
    "stream_unavailable",
    "the link to the other instances (Redis) is down; results resume when it is back",
)


class RedisRelay:
    def __init__(self, url: str, hub: StreamHub, ttl_s: float = 10.0, refresh_s: float = 2.0):
        self.hub, self.ttl_s, self.refresh_s = hub, ttl_s, refresh_s
        self.instance = uuid.uuid4().hex
        # No retries inside the client: the tasks below back off themselves and say so.
        self.client = aioredis.from_url(url, socket_connect_timeout=1.0, socket_timeout=2.0,
                                        retry=Retry(NoBackoff(), 0), health_check_interval=5)
        self._claim, self._release = (self.client.register_script(s) for s in (CLAIM, RELEASE))
        self.local: dict[str, bool] = {}  # our producers' names -> claim confirmed
        self.revoked: set[str] = set()  # ours that lost their name to another instance
        self.rig_wanted: set[str] = set()  # ours a subscriber elsewhere wants the rig of
        self.remote: dict[str, Remote] = {}
        self.channels: set[str] = set()  # names the reader subscribed to
        self.joined: set[str] = set()  # ... and whose current state it has fetched since
        self.queue: deque[tuple[str, str, Any]] = deque()
        self.pub_down = self.sub_down = self._writing = False
        self._kick = asyncio.Event()
        self._dirty = True  # the set of channels to listen to may have changed
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Never waits for Redis: a server whose Redis is down still serves its own streams."""
        for loop in (self._writer, self._reader, self._refresher):
            self._tasks.append(asyncio.create_task(loop(), name=f"redis-{loop.__name__}"))
        log.info("streams across instances through Redis; this instance is %s", self.instance)

    async def stop(self, flush_s: float = 1.0) -> None:
        deadline = time.monotonic() + flush_s  # let the last stream ends reach Redis
        while (self.queue or self._writing) and not self.pub_down and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.client.aclose()

    # -- hub hooks (synchronous; never raise, never block) --------------------------------
    def started(self, name: str, event_text: str) -> None:
        self.local[name], self._dirty = False, True
        self.revoked.discard(name)
        self._put("claim", name, event_text)

    def ended(self, name: str, event_text: str) -> None:
        self._dirty = True
        self.rig_wanted.discard(name)
        if self.local.pop(name, None) is not None:  # None: revoked, the name is not ours
            self._put("release", name, event_text)

    def result(self, name: str, binary: bytes) -> None:
        stream = self.hub.streams.get(name)
        if name in self.local and stream is not None and stream.producer is not None:
            wanted = stream.producer.wanted
            mask = sum(1 << i for i, p in enumerate(protocol.PART_NAMES) if p in wanted)
            self._put("result", name, bytes([mask]) + binary)

    def subscribed(self, sub: Subscriber) -> None:
        self._dirty = True
        if self.hub.has_producer(sub.stream):
            return
        remote = self.remote.get(sub.stream)
        if self.sub_down:
            sub.offer_event(UNAVAILABLE)
        elif sub.stream in self.joined and remote is not None and remote.started:
            sub.offer_event(remote.started)  # else the reader's join tells it
        if sub.rig:
            self._put("rig", sub.stream, b"")

    def unsubscribed(self, name: str) -> None:
        self._dirty = True

    def wants_rig(self, name: str) -> bool:
        return name in self.rig_wanted

    def remote_live(self, name: str) -> bool:
        remote = self.remote.get(name)
        return remote is not None and time.monotonic() - remote.seen < self.ttl_s

    def _put(self, kind: str, name: str, payload: Any) -> None:
        if self.pub_down:
            return  # the writer claims what is live again once Redis is back
        if len(self.queue) >= QUEUE_MAX:  # Redis too slow: the oldest result goes, never events
            del self.queue[next((i for i, it in enumerate(self.queue) if it[0] == "result"), 0)]
        self.queue.append((kind, name, payload))
        self._kick.set()

    # -- writer ----------------------------------------------------------------------------
    async def _writer(self) -> None:
        while True:
            await self._kick.wait()
            self._kick.clear()
            while self.queue:
                batch: list[tuple[str, str, Any]] = []  # a claim ends its batch: what follows
                while self.queue and len(batch) < 64 and (not batch or batch[-1][0] != "claim"):
                    kind, name, payload = self.queue.popleft()  # waits for its answer
                    if kind != "result" or name not in self.revoked:
                        batch.append((kind, name, payload))
                try:
                    self._writing = True
                    replies = await self._write(batch)
                except ERRORS as exc:
                    await self._writer_outage(exc)
                    break
                finally:
                    self._writing = False
                for (kind, name, _), reply in zip(batch, replies, strict=True):
                    if kind in ("claim", "refresh") and name in self.local:
                        if reply:
                            self.local[name] = True
                            self._rig_wanted(name, reply == 2)
                        else:
                            self._lost(name)

    async def _write(self, batch: list[tuple[str, str, Any]]) -> list[Any]:
        """Send a batch in one round trip; the reply of each item's first command, in order."""
        pipe, first, me = self.client.pipeline(transaction=False), [], self.instance.encode()
        for kind, name, payload in batch:
            first.append(len(pipe))
            keys, channel = [PRODUCER + name, META + name, RIG + name], CHANNEL + name
            if kind in ("claim", "refresh"):
                message = b"S" + me + payload.encode() if kind == "claim" else b""
                args = [self.instance, round(self.ttl_s), self._meta(name, payload), channel,
                        message]
                await self._claim(keys=keys, args=args, client=pipe)
            elif kind == "release":
                args = [self.instance, channel, b"E" + me + payload.encode()]
                await self._release(keys=keys[:2], args=args, client=pipe)
            elif kind == "result":
                pipe.publish(channel, b"R" + me + payload)
            else:  # rig: ask the producer's instance for the rig, and keep asking while wanted
                pipe.set(RIG + name, self.instance, ex=round(self.ttl_s))
                pipe.publish(CONTROL, name)
        replies = await pipe.execute()
        return [replies[i] for i in first]

    def _meta(self, name: str, started: str) -> bytes:
        stream = self.hub.streams.get(name)
        info = stream.describe(time.monotonic()) if stream is not None else {}
        return orjson.dumps({**info, "name": name, "instance": self.instance, "started": started,
                             "started_at": time.time() - info.get("age_s", 0.0)})

    def _lost(self, name: str) -> None:
        """Another instance holds the name (a race, or a claim lost in an outage)."""
        del self.local[name]
        self.revoked.add(name)
        self.rig_wanted.discard(name)
        self._dirty = True
        log.warning("stream %r is published on another instance; ending ours", name)
        self.hub.revoke(name, f"stream {name!r} is published on another instance")

    async def _writer_outage(self, exc: BaseException) -> None:
        if not self.pub_down:  # once per outage
            log.warning("Redis unavailable (%s): local streams go on, remote copies paused", exc)
        self.pub_down = True
        self.queue.clear()
        delay = BACKOFF_S[0]
        while True:
            with contextlib.suppress(*ERRORS):  # no stale pooled socket after a restart
                await self.client.connection_pool.disconnect()
            await asyncio.sleep(delay)
            delay = min(delay * 2, BACKOFF_S[1])
            with contextlib.suppress(*ERRORS):
                await self.client.ping()
                break
        self.pub_down = False
        log.info("Redis is back: publishing %d local stream(s) again", len(self.local))
        for name in list(self.local):
            if (stream := self.hub.streams.get(name)) is not None and stream.producer is not None:
                self.local[name] = False
                self._put("claim", name, stream_started(stream))

    # -- reader ----------------------------------------------------------------------------
    async def _reader(self) -> None:
        delay = BACKOFF_S[0]
        while True:
            pubsub = self.client.pubsub()
            try:
                await pubsub.subscribe(CONTROL)
                while True:
                    if self._dirty:
                        await self._sync_channels(pubsub)
                    if (msg := await pubsub.get_message(timeout=0.2)) is not None:
                        await self._on_message(msg)
                        delay = BACKOFF_S[0]
            except ERRORS as exc:
                if not self.sub_down:
                    log.warning("Redis subscription lost (%s); reconnecting", exc)
                    for name in self.channels:
                        self.hub.relay_event(name, UNAVAILABLE)
                    for remote in self.remote.values():
                        remote.joined = None  # when it is back, say so with stream_started
                self.sub_down = True
                with contextlib.suppress(*ERRORS):  # no stale pooled socket after a restart
                    await self.client.connection_pool.disconnect()
            finally:
                self.channels.clear()
                self.joined.clear()
                self._dirty = True
                with contextlib.suppress(*ERRORS):
                    await pubsub.aclose()
            await asyncio.sleep(delay)
            delay = min(delay * 2, BACKOFF_S[1])

    async def _sync_channels(self, pubsub: Any) -> None:
        """Listen to exactly the streams that have subscribers here and no producer here."""
        self._dirty = False
        wanted = {n for n, s in self.hub.streams.items() if s.subscribers and s.producer is None}
        if gone := self.channels - wanted:
            await pubsub.unsubscribe(*(CHANNEL + n for n in gone))
            self.channels -= gone
            self.joined -= gone
        if new := wanted - self.channels:
            await pubsub.subscribe(*(CHANNEL + n for n in new))
            self.channels |= new

    async def _on_message(self, msg: dict[str, Any]) -> None:
        channel, kind, data = msg["channel"].decode(), msg["type"], msg["data"]
        if channel == CONTROL:
            if kind == "subscribe" and self.sub_down:
                self.sub_down = False
                log.info("Redis subscription is back")
            elif kind == "message" and data.decode() in self.local:
                self._rig_wanted(data.decode(), True)
            return
        name, now = channel[len(CHANNEL):], time.monotonic()
        if kind == "subscribe":  # SUBSCRIBE is done: what we fetch now is not stale
            self.joined.add(name)
            raw = await self.client.get(META + name)
            meta = orjson.loads(raw) if isinstance(raw, bytes) else None
            if meta and meta["instance"] != self.instance and name in self.channels:
                started = meta["started"]
                self.remote[name] = Remote(meta["instance"], started, now, True, started)
                self.hub.relay_event(name, started)
            return
        sender = data[1:1 + ID_LEN].decode() if kind == "message" else self.instance
        if sender == self.instance:
            return
        tag, payload, remote = data[:1], data[1 + ID_LEN:], self.remote.get(name)
        if tag == b"S":
            text = payload.decode()
            if remote is not None and (remote.instance, remote.joined) == (sender, text):
                remote.joined = None  # published between our SUBSCRIBE and GET: passed on
            else:
                self.remote[name] = Remote(sender, text, now, told=True)
                self.hub.relay_event(name, text)
        elif remote is not None and remote.instance != sender:
            return  # not the owner we know of (a race's loser, or a stale claim)
        elif tag == b"E":
            self.remote.pop(name, None)
            self.hub.relay_event(name, payload.decode())
        elif tag == b"R":
            if remote is None:
                self.remote[name] = remote = Remote(sender, None, now)
            remote.seen = now
            binary = payload[1:]
            self.hub.relay_result(name, binary, lambda: result_as_json(binary, payload[0]))

    def _rig_wanted(self, name: str, wanted: bool) -> None:
        stream = self.hub.streams.get(name)
        if (name in self.rig_wanted) != wanted and stream is not None and stream.producer:
            (self.rig_wanted.add if wanted else self.rig_wanted.discard)(name)
            self.hub.rig_changed(stream.producer)

    # -- refresher -------------------------------------------------------------------------
    async def _refresher(self) -> None:
        """Keep our claims and rig requests alive; learn of and forget remote producers."""
        while True:
            await asyncio.sleep(self.refresh_s)
            now = time.monotonic()
            for name, remote in list(self.remote.items()):
                if now - remote.seen > self.ttl_s:  # no word from its producer: it is gone
                    del self.remote[name]
                    if remote.told:
                        self.hub.relay_event(name, stream_ended(name, "producer_lost"))
            for name, claimed in list(self.local.items()):
                if claimed and (stream := self.hub.streams.get(name)) and stream.producer:
                    self._put("refresh", name, stream_started(stream))
            for name in self.channels:
                if any(s.rig for s in self.hub.remote_subscribers(name)):
                    self._put("rig", name, b"")
            with contextlib.suppress(*ERRORS):  # outages are reported by the reader and writer
                for meta in await self._metas():
                    known, owner = self.remote.get(name := meta["name"]), meta["instance"]
                    if owner == self.instance:
                        self.remote.pop(name, None)
                    elif known is None or known.instance != owner:
                        self.remote[name] = Remote(owner, meta["started"], now)
                    else:
                        known.seen = now

    async def _metas(self) -> list[dict[str, Any]]:
        keys = [k async for k in self.client.scan_iter(match=META + "*", count=500)]
        return [orjson.loads(raw) for raw in await self.client.mget(keys) if raw] if keys else []

    async def list_streams(self, local: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Streams of every instance: ours as the hub sees them, the others' from Redis."""
        for entry in local:
            entry["instance"] = self.instance
        try:
            async with asyncio.timeout(1.0):
                metas = await self._metas()
        except (*ERRORS, TimeoutError):
            return local
        ours = {e["name"] for e in local}
        fields = ("pipeline", "fps", "subscribers", "results", "instance")
        return local + [
            {"name": m["name"], "live": True, **{f: m.get(f) for f in fields},
             "age_s": round(max(time.time() - m["started_at"], 0.0), 1)}
            for m in metas if m["name"] not in ours and m["instance"] != self.instance
        ]
