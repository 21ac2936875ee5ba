"""Migration records: what each test or planned migration wrote, so cleanup removes exactly that."""

from __future__ import annotations

import json
import time

from sqlalchemy import Connection, select

from godwit.state import schema as t
from godwit.state.models import MigrationRecord


class MigrationRecords:
    def __init__(self, c: Connection) -> None:
        self.c = c

    def add(self, server_id: int, *, kind: str, recovery_point: int, fmt: str, out_dir: str,
            files: list[str]) -> None:
        self.c.execute(t.migrations.insert().values(server_id=server_id, kind=kind, recovery_point=recovery_point,
                                                    format=fmt, out_dir=out_dir, files=json.dumps(files),
                                                    created=time.time(), state="done"))

    def outstanding_tests(self, server_id: int) -> list[MigrationRecord]:
        """Test migrations whose files are not cleaned up yet."""
        rows = self.c.execute(select(t.migrations).where(
            t.migrations.c.server_id == server_id, t.migrations.c.kind == "test",
            t.migrations.c.state == "done").order_by(t.migrations.c.id))
        return [MigrationRecord(r.id, r.server_id, r.kind, r.recovery_point, r.format, r.out_dir,
                                json.loads(r.files), r.created, r.state) for r in rows]

    def restamp(self, record_id: int, files: list[str]) -> None:
        """The files of a migration after guest preparation changed them in place (and added its report)."""
        self.c.execute(t.migrations.update().where(t.migrations.c.id == record_id).values(files=json.dumps(files)))

    def mark_cleaned(self, record_id: int) -> None:
        self.c.execute(t.migrations.update().where(t.migrations.c.id == record_id).values(state="cleaned"))
