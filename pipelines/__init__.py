"""mailpulse: load provider email events into a warehouse and answer
"what happened to the mail we sent?"."""

__version__ = "0.1.0"
