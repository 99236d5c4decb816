"""curata.report."""
