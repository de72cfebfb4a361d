"""Binary-log archiving and point-in-time recovery (MariaDB first).

One module per operation: `events` reads binlog bytes, `index` is the segment catalog,
`push` / `stream` archive, `replay` restores to a second or a GTID, `continuity` proves
there is no gap from a backup to the latest restorable time.
"""
