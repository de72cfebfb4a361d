"""The Dagster code location: assets, checks, schedules and sensors over the core library.

Nothing here moves backup bytes: every op asks a worker (the database host, locally or
over SSH) to run the same CLI an operator would, and turns its JSON into metadata.
"""
