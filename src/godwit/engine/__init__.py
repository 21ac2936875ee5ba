"""Cycles (the appliance), the mover and the lifecycle that drives them (start, cycle, loop, status)."""
