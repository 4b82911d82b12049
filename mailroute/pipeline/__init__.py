"""The core's stages run against the store: intake, decisions, workers, status changes,
escalations and periodic reports."""
