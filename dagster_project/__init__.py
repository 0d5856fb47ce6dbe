"""The Dagster code location of Nachfass: assets, jobs, schedules, sensors, checks and resources over the
`nachfass` library (workspace.yaml loads dagster_project.definitions)."""
