"""The audit trail (DESIGN §7): every request, approval, execution, notification, export and evidence write.

Records go to ``plugin.audit`` and ClickHouse ``audit_log``, hash-chained per writer (``chain.py``): each
record carries the previous record's hash, so an edited, deleted or reordered row shows up when the
chain is verified.
"""
