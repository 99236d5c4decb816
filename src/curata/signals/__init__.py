"""curata.signals."""
