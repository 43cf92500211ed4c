"""cachestorm's view of the profile service (app.py): the whole integration, in one file.

    locust -f locustfile.py --headless --target examples/profiles/target.py:Profiles \
        --profiles-fill textbook --profiles-fill-delay-ms 20
"""

from __future__ import annotations

import secrets

from app import DDL, ProfileService

from cachestorm import embedded
from cachestorm.target import Cached, Read


class Profiles:
    def __init__(self, context):
        o = context.options
        self.app = ProfileService(o.redis_url, o.pg_dsn, o.profiles_fill, o.profiles_fill_delay_ms / 1000)

    @classmethod
    def add_arguments(cls, parser):
        parser.add_argument(
            "--profiles-fill",
            env_var="PROFILES_FILL",
            default="guarded",
            choices=("guarded", "textbook"),
            help="Profiles: how the cache is kept in step",
        )
        parser.add_argument(
            "--profiles-fill-delay-ms",
            type=float,
            default=0.0,
            help="Profiles: pause between the database read and the cache fill",
        )

    @classmethod
    def setup(cls, environment):  # no --redis-url/--pg-dsn: start embedded ones
        embedded.setup_services(environment)

    def key(self, index):
        return f"p{index}"

    def read(self, key):
        profile, cached = self.app.get_profile(key)
        return Read(profile["rev"], "hit" if cached else "miss")

    def write(self, key):
        return self.app.rename(key, secrets.token_hex(4))["rev"]

    def reset(self, keys):
        self.app.db.execute(DDL)
        self.app.db.execute("TRUNCATE profiles")
        self.app.db.execute("INSERT INTO profiles SELECT unnest(%s::text[]), '{}', 0", (list(keys),))
        for k in self.app.cache.scan_iter("profile:*"):
            self.app.cache.delete(k)

    def sweep(self, keys):
        revs = dict(self.app.db.execute("SELECT profile_id, rev FROM profiles").fetchall())
        for k in keys:
            raw = self.app.cache.get(f"profile:{k}")
            yield Cached(k, None if raw is None else ProfileService.parse(raw)["rev"], revs.get(k))

    def close(self):
        self.app.close()
