"""``agentvine``: the terminal client of AgentVine.

It talks to the server over the REST API only (it never imports Django), so
it installs on any laptop. Writes typed while the server is unreachable wait
in a local SQLite outbox and are replayed exactly once when it is back.
"""

__version__ = "0.1.0"
