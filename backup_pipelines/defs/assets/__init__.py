"""Assets grouped by domain: physical backups, restore points (verification, staging)."""
