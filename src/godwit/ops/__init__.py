"""The operator's tools across servers: waves and their migrations, the planner, window logs and
scheduled cutovers. Above the engine and migration (it drives both), below the CLI."""
