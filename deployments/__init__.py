"""Turning backup policies into Prefect deployments."""
