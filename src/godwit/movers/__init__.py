"""Movers that scale out: the mover's work as jobs of procrastinate on the project's PostgreSQL.

``queue`` builds the job app and its tasks (apply one server; the periodic sweep that defers
what is missing and hands a dead worker's jobs on) and defers jobs; ``worker`` runs a worker
process, or one in a thread of `godwit serve`. On SQLite none of this runs: the mover stays
in-process (``engine.mover.run_mover``).
"""
