"""A unit of work: one transaction, with every repository bound to its connection.

``with db.unit() as u:`` commits when the block ends and rolls back on an exception, so what one
step must do together (read the next number and insert the row; record a point and mark its cycle
applied) is written together or not at all.
"""

from __future__ import annotations

from sqlalchemy import Connection

from godwit.state.cutovers import Cutovers
from godwit.state.cycle_rows import CycleRows
from godwit.state.events import Events
from godwit.state.measured import Measured
from godwit.state.points import RecoveryPoints
from godwit.state.records import MigrationRecords
from godwit.state.servers import Servers
from godwit.state.waves import Waves
from godwit.state.windowlog import WindowLog


class Unit:
    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.servers = Servers(connection)
        self.cycles = CycleRows(connection)
        self.points = RecoveryPoints(connection)
        self.migrations = MigrationRecords(connection)
        self.events = Events(connection)
        self.waves = Waves(connection)
        self.measured = Measured(connection)
        self.windows = WindowLog(connection)
        self.cutovers = Cutovers(connection)
