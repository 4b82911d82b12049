"""mailroute: a ServiceDesk mailbox turned into a ticket registry."""

__version__ = "0.1.0"
