"""Recent entries handed to Redis, kept so that entries Redis loses in a crash are sent again.

Redis with `appendfsync everysec` (or without persistence) can lose the last writes it
acknowledged when it is killed: the collector believed those ticks delivered. To close that
hole, every XADD goes through `checked_xadd`, a Lua script that

- refuses to add anything when the stream's marker key (`{prefix}collector_last`, the id of the
  last entry this collector added, written in the same script) is not what the collector
  expects: the marker and the entries after it were lost together, since Redis persists a
  script's effects as one unit;
- otherwise adds the entries and moves the marker.

On a refusal the collector re-sends, oldest first, every journaled entry newer than the marker
Redis still has (or the whole journal when the marker is gone), then the new entries, so order
is kept and the writer's idempotent inserts absorb whatever had already been stored.

The journal is a small file (tab-separated `id`, JSON entry) rewritten when it grows past twice
its size; it is written without fsync: it must survive a kill of the collector, not of the
machine. A restarted collector reloads it, so a Redis crash during a collector restart is
covered too.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections import deque
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import orjson
import redis.asyncio as aioredis

from shared.codec import as_text

log = logging.getLogger(__name__)

Entry = dict[str, Any]  # {"stream": "greeks" | "api_logs", "fields": {...}}

# KEYS[1] = marker key, KEYS[2..] = one stream key per entry
# ARGV[1] = expected marker ('' = accept whatever is there), then per entry: n, k1, v1, ...
CHECKED_XADD = """
local current = redis.call('GET', KEYS[1])
if ARGV[1] ~= '' and current ~= ARGV[1] then
  return {0, current or ''}
end
local ids = {1}
local a = 2
for i = 2, #KEYS do
  local n = tonumber(ARGV[a])
  local args = {KEYS[i], '*'}
  for j = 1, 2 * n do args[#args + 1] = ARGV[a + j] end
  a = a + 1 + 2 * n
  ids[#ids + 1] = redis.call('XADD', unpack(args))
end
if #ids > 1 then redis.call('SET', KEYS[1], ids[#ids]) end
return ids
"""


def id_key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    try:
        return int(ms), int(seq or 0)
    except ValueError:
        return (0, 0)


def script_args(entries: Sequence[Entry], expected: str) -> list[str]:
    argv = [expected]
    for e in entries:
        fields = e["fields"]
        argv.append(str(len(fields)))
        for k, v in fields.items():
            argv.extend((str(k), str(v)))
    return argv


class RecentJournal:
    def __init__(self, path: Path | None, keep: int = 2000) -> None:
        self.path = path
        self.keep = keep
        self._recent: deque[tuple[str, Entry]] = deque(maxlen=keep)
        self._lines_on_disk = 0
        self._load()

    def _load(self) -> None:
        if self.path is None or not self.path.exists():
            return
        with open(self.path, "rb") as fh:
            for raw in fh:
                entry_id, sep, payload = raw.rstrip(b"\n").partition(b"\t")
                if not sep:
                    continue
                try:
                    entry = orjson.loads(payload)
                except orjson.JSONDecodeError:
                    continue  # a torn last line after a kill: it was never acknowledged
                if isinstance(entry, dict) and isinstance(entry.get("fields"), dict):
                    self._recent.append((entry_id.decode(), entry))
                    self._lines_on_disk += 1

    @property
    def last_id(self) -> str:
        return self._recent[-1][0] if self._recent else ""

    def __len__(self) -> int:
        return len(self._recent)

    def record(self, ids: Sequence[str], entries: Sequence[Entry]) -> None:
        pairs = list(zip(ids, entries, strict=True))
        self._recent.extend(pairs)
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self._lines_on_disk + len(pairs) > 2 * self.keep:
            self._rewrite()
            return
        with open(self.path, "ab") as fh:
            fh.write(b"".join(i.encode() + b"\t" + orjson.dumps(e) + b"\n" for i, e in pairs))
        self._lines_on_disk += len(pairs)

    def _rewrite(self) -> None:
        assert self.path is not None
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "wb") as fh:
            fh.write(
                b"".join(i.encode() + b"\t" + orjson.dumps(e) + b"\n" for i, e in self._recent)
            )
        os.replace(tmp, self.path)
        self._lines_on_disk = len(self._recent)

    def after(self, marker: str) -> list[Entry]:
        """Entries newer than `marker` (all of them when the marker is unknown or too old)."""
        if not marker:
            return [e for _, e in self._recent]
        floor = id_key(marker)
        newer = [(i, e) for i, e in self._recent if id_key(i) > floor]
        if (
            self._recent
            and id_key(self._recent[0][0]) > floor
            and marker not in (i for i, _ in self._recent)
        ):
            log.error(
                "redis_lost_beyond_journal marker %s is older than the journal's first "
                "entry %s: entries between them cannot be re-sent",
                marker,
                self._recent[0][0],
            )
        return [e for _, e in newer]

    def forget(self) -> None:
        """Start the journal afresh (the re-sent entries are recorded under their new ids)."""
        self._recent.clear()
        if self.path is not None:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
        self._lines_on_disk = 0

    def entries(self) -> Iterable[tuple[str, Entry]]:
        return iter(self._recent)


class CheckedStreams:
    """XADD through `CHECKED_XADD`, re-sending what Redis lost (see the module docstring)."""

    def __init__(
        self,
        client: aioredis.Redis,
        marker_key: str,
        stream_key: dict[str, str],
        journal: RecentJournal,
    ) -> None:
        self.client = client
        self.marker_key = marker_key
        self.stream_key = stream_key  # "greeks" -> "bridge:greeks", ...
        self.journal = journal
        self.expected = journal.last_id
        self.resent_total = 0
        self._script = client.register_script(CHECKED_XADD)

    async def _run(self, entries: Sequence[Entry], expected: str) -> tuple[list[str], str]:
        """(ids of the added entries, "") or ([], the marker Redis holds) on a refusal."""
        keys = [self.marker_key, *(self.stream_key[str(e["stream"])] for e in entries)]
        reply = await self._script(keys=keys, args=script_args(entries, expected))
        decoded = [as_text(r) for r in reply]
        if int(decoded[0]) == 1:
            return decoded[1:], ""
        return [], decoded[1]

    async def add(self, entries: Sequence[Entry]) -> int:
        """Add `entries` in order; returns how many lost entries were re-sent first."""
        if not entries:
            return 0
        ids, current = await self._run(entries, self.expected)
        if ids:
            self._accepted(ids, entries)
            return 0
        if current and id_key(current) > id_key(self.expected):
            log.error(
                "redis_marker_ahead %s holds %s, newer than this collector's last entry "
                "%s: is another collector writing under the same prefix?",
                self.marker_key,
                current,
                self.expected,
            )
            lost: list[Entry] = []
        else:
            lost = self.journal.after(current)
            log.warning(
                "redis_lost_entries Redis came back without the last %d entries this "
                "collector added (its marker is %r, expected %r): re-sending them first",
                len(lost),
                current,
                self.expected,
            )
        resend = [*lost, *entries]
        retried, moved = await self._run(resend, current)
        if not retried:
            raise RuntimeError(f"{self.marker_key} moved to {moved!r} while re-sending")
        self.journal.forget()
        self._accepted(retried, resend)
        self.resent_total += len(lost)
        return len(lost)

    def _accepted(self, ids: list[str], entries: Sequence[Entry]) -> None:
        self.journal.record(ids, entries)
        self.expected = ids[-1]
