"""The web dashboard: server-rendered pages and a server-sent-events stream (read only for now)."""
