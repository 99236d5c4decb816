"""curata.io."""
