"""The backup engine. Never imports Dagster: restores must work without the orchestrator."""
