"""A small profile service's data layer: the kind of code a team would point cachestorm at.

It knows nothing of cachestorm. Profiles live in PostgreSQL (``profiles``: a text id, a JSON
document and a revision), are cached in Redis as JSON under ``profile:<id>``, and are read
cache-aside. Two ways to keep the cache in step with writes, chosen by ``fill``:

- ``"textbook"``: a write commits, then deletes the cache entry; a miss loads the row and SETs it.
  A reader that loaded revision 5 just before a writer committed 6 and deleted the entry puts 5
  back after the delete: the stale-set race. ``fill_delay_s`` widens its window.
- ``"guarded"``: a write commits, then installs its own revision in the cache; every SET (a
  fill's or a write's) goes through a compare-and-set that refuses a revision older than the one
  cached, so a late fill of 5 cannot replace 6.
"""

from __future__ import annotations

import json
import time
from typing import Any

import psycopg
import redis

DDL = """
CREATE TABLE IF NOT EXISTS profiles (
    profile_id text PRIMARY KEY,
    doc        jsonb  NOT NULL,
    rev        bigint NOT NULL DEFAULT 0
)
"""

# KEYS[1] the entry; ARGV[1] the JSON to cache; ARGV[2] its revision.
SET_IF_NEWER = """
local cur = redis.call('GET', KEYS[1])
if cur and cjson.decode(cur)['rev'] >= tonumber(ARGV[2]) then return 0 end
redis.call('SET', KEYS[1], ARGV[1])
return 1
"""


class ProfileService:
    def __init__(self, redis_url: str, pg_dsn: str, fill: str = "textbook", fill_delay_s: float = 0.0):
        self.cache = redis.Redis.from_url(redis_url)
        self.db = psycopg.connect(pg_dsn, autocommit=True)
        self.fill = fill
        self.fill_delay_s = fill_delay_s
        self._set_if_newer = self.cache.register_script(SET_IF_NEWER)

    def get_profile(self, profile_id: str) -> tuple[dict[str, Any], bool]:
        """The profile, and whether the cache served it."""
        raw = self.cache.get(f"profile:{profile_id}")
        if raw is not None:
            return self.parse(raw), True
        row = self.db.execute("SELECT doc, rev FROM profiles WHERE profile_id = %s", (profile_id,)).fetchone()
        if row is None:
            raise KeyError(profile_id)
        profile = {"doc": row[0], "rev": row[1]}
        time.sleep(self.fill_delay_s)
        self._store(profile_id, profile)
        return profile, False

    def rename(self, profile_id: str, name: str) -> dict[str, Any]:
        """Change a profile's name; the profile as committed."""
        row = self.db.execute(
            "UPDATE profiles SET doc = jsonb_set(doc, '{name}', to_jsonb(%s::text)), rev = rev + 1"
            " WHERE profile_id = %s RETURNING doc, rev",
            (name, profile_id),
        ).fetchone()
        if row is None:
            raise KeyError(profile_id)
        profile = {"doc": row[0], "rev": row[1]}
        if self.fill == "guarded":
            self._store(profile_id, profile)
        else:
            self.cache.delete(f"profile:{profile_id}")
        return profile

    def _store(self, profile_id: str, profile: dict[str, Any]) -> None:
        key, value = f"profile:{profile_id}", json.dumps(profile)
        if self.fill == "guarded":
            self._set_if_newer(keys=[key], args=[value, profile["rev"]])
        else:
            self.cache.set(key, value)

    @staticmethod
    def parse(raw: bytes | str) -> dict[str, Any]:
        """A cached profile."""
        profile: dict[str, Any] = json.loads(raw)
        return profile

    def close(self) -> None:
        self.cache.close()
        self.db.close()
