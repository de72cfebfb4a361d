"""Catalog entries as Dagster metadata: numbers the UI plots over time, text it shows."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from dagster import MetadataValue


def backup_metadata(entry: dict[str, Any], repository: str) -> dict[str, Any]:
    stored = int(entry["size_bytes"])
    source = int(entry["source_size_bytes"])
    duration = float(entry["duration_seconds"]) or 1e-9
    binlog = entry.get("binlog") or {}
    meta: dict[str, Any] = {
        "backup_id": MetadataValue.text(entry["id"]),
        "kind": MetadataValue.text(entry["kind"]),
        "parent_id": MetadataValue.text(entry.get("parent_id") or "-"),
        "chain_id": MetadataValue.text(entry.get("chain_id") or entry["id"]),
        "stored_bytes": MetadataValue.int(stored),
        "stored_mib": MetadataValue.float(round(stored / 2**20, 3)),
        "source_bytes": MetadataValue.int(source),
        "source_mib": MetadataValue.float(round(source / 2**20, 3)),
        "compression_ratio": MetadataValue.float(round(source / stored, 3) if stored else 0.0),
        "duration_seconds": MetadataValue.float(duration),
        "throughput_mib_s": MetadataValue.float(round(source / 2**20 / duration, 2)),
        "from_lsn": MetadataValue.int(int(entry.get("from_lsn") or 0)),
        "to_lsn": MetadataValue.int(int(entry.get("to_lsn") or 0)),
        # to_lsn is the checkpoint the next incremental starts from; on a quiet server it can
        # stay put for hours while the redo log (what the backup copied up to) moves on.
        "redo_end_lsn": MetadataValue.int(int(entry.get("last_lsn") or entry.get("to_lsn") or 0)),
        "repository": MetadataValue.text(repository),
        "object_key": MetadataValue.text(entry["objects"][0]["key"] if entry.get("objects") else "-"),
        "sha256": MetadataValue.text(entry["objects"][0]["sha256"] if entry.get("objects") else "-"),
        "encrypted": MetadataValue.bool(bool(entry.get("encryption"))),
        "finished_at": MetadataValue.timestamp(datetime.fromisoformat(entry["finished_at"])),
    }
    if binlog:
        meta["binlog_position"] = MetadataValue.text(
            f"{binlog['file']}:{binlog['position']}" + (f" (GTID {binlog['gtid']})" if binlog.get("gtid") else "")
        )
    return meta


def verification_metadata(report: dict[str, Any]) -> dict[str, Any]:
    tables = report.get("tables") or {}
    rows = sum(int(t.get("rows", 0)) for t in tables.values())
    return {
        "backup_id": MetadataValue.text(report["backup_id"]),
        "chain": MetadataValue.json(report.get("chain", [])),
        "chain_length": MetadataValue.int(len(report.get("chain", []))),
        "passed": MetadataValue.bool(bool(report["passed"])),
        "tables": MetadataValue.int(len(tables)),
        "rows": MetadataValue.int(rows),
        "restore_seconds": MetadataValue.float(float(report["restore_seconds"])),
        "check_seconds": MetadataValue.float(float(report["check_seconds"])),
        "server_version": MetadataValue.text(report.get("server_version") or "-"),
        "problems": MetadataValue.json(report.get("problems", [])),
        "target": MetadataValue.text(report.get("target") or "sandbox"),
        "table_checksums": MetadataValue.md(
            "| table | rows | checksum | check |\n|---|---:|---:|---|\n"
            + "\n".join(
                f"| {n} | {t.get('rows')} | {t.get('checksum')} | {t.get('check', '')} |"
                for n, t in sorted(tables.items())[:200]
            )
        ),
    }
