"""Prefect flows and deployments: thin wrappers over ``energy_btgm`` (flows land with the orchestration issue)."""
