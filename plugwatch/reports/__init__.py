"""Diagnostic reports: pure builder, template, HTML page, export links."""
