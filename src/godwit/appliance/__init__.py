"""`godwit appliance run`: the on-premises side of the appliance protocol.

The appliance connects out to the service only (on the control plane's route), mirrors the
servers it is given into its own project's state, runs their cycles into the shared cache store
with the engine, and reports them in order. See docs/architecture.md, "The appliance protocol".
"""
