"""The vocabulary of an op history: units, operation names, statuses, sources, latency groups.

Plain constants, importing nothing, so that every module of the analysis can use them without
depending on any other (docs/history.md defines the rows they name).
"""

from __future__ import annotations

NS_PER_US = 1_000
NS_PER_MS = 1_000_000
NS_PER_S = 1_000_000_000

# Statuses, as Jepsen names them: done, certainly not done, unknown.
OK = "ok"
FAIL = "fail"
INFO = "info"
STATUSES = (OK, FAIL, INFO)

# Operations (``f``) of the coherence workload.
READ = "read"
WRITE = "write"
FILL = "fill"
INVALIDATE = "invalidate"
SWEEP = "sweep"
PROBE = "probe"
WS_OPEN = "ws_open"
WS_RECV = "ws_recv"
WS_CLOSE = "ws_close"
UI_READ = "ui_read"
#: What a target's tiers did on their own (a drop, a push), reported at test stop.
TIER_EVENT = "tier_event"
#: A key's starting version, when the target's reset reported it.
INITIAL = "initial"
#: The WebSocket listener's connection rows.
WS_OPS = (WS_OPEN, WS_RECV, WS_CLOSE)
#: A break in the notifier's ``seq`` a listener saw; its ``source`` says which kind.
WS_GAP = "ws_gap"
#: The notifier re-LISTENed: changes committed in the row's window may have been lost by PostgreSQL.
GAP_RECONNECT = "reconnect"
#: A hole in ``seq``: messages a live notifier numbered and did not send (``value`` of them).
GAP_SEQ = "seq"

# Operations of the contention workloads.
INCR = "incr"
COUNTER_READ = "counter_read"
TX_TRANSFER = "tx_transfer"
TX_READ = "tx_read"
LOCK_ACQUIRE = "lock_acquire"
LOCK_RELEASE = "lock_release"
GUARDED_WRITE = "guarded_write"
INVALIDATE_BATCH = "invalidate_batch"
DB_LOAD = "db_load"
REDIS_STAT = "redis_stat"
#: A fault the nemesis applied (``source`` ``start``) or healed (``end``); ``key`` names it.
NEMESIS = "nemesis"

# Sources of a read: served from a cache, or loaded from the database. A target with several cache
# tiers says which one: ``hit:<tier>`` (``hit:l1``) is a hit too.
HIT = "hit"
MISS = "miss"
TIERED_HIT = "hit:"

#: Latency groups of ok reads, split by source: group -> source.
READ_GROUPS = {"read_hit": HIT, "read_miss": MISS}
#: The group timed from commit to receipt (``ws_recv``: ``t_complete - value``), not by duration.
NOTIFICATION = "notification"
#: Latency groups of the contention workloads, one per operation (the group is the ``f``).
CONTENTION_LATENCY_OPS = (
    INCR,
    COUNTER_READ,
    TX_TRANSFER,
    TX_READ,
    LOCK_ACQUIRE,
    GUARDED_WRITE,
    INVALIDATE_BATCH,
    DB_LOAD,
)
#: Every latency group of the ``latency`` check, in the order it reports them (docs/history.md).
LATENCY_GROUPS = (*READ_GROUPS, WRITE, FILL, NOTIFICATION, *CONTENTION_LATENCY_OPS)
#: The groups of the scheduled operations of an open-model run (``open_model_latency``).
SCHEDULED_GROUPS = (*READ_GROUPS, WRITE)

DEFAULT_LOCK_TTL_MS = 1000

#: Locust's request type of the failures the live view logs (``COHERENCE stale_read``): its
#: judgements of the history, not requests, so the analysis leaves them out of Locust's figures.
LIVE_FAILURE_TYPE = "COHERENCE"
