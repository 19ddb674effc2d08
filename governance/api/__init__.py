"""The governance REST API (``/api/governance/``): versions, their lifecycle, deployments."""
