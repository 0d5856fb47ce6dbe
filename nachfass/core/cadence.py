"""Time slots of a campaign's cadence (its cron in the shop's timezone, campaign registry).

The Dagster schedules and partitions (dagster_project/jobs.py) and the replay both use these, so a replay
sends what the live schedule would have.
"""

from __future__ import annotations

from datetime import UTC, date, datetime

import dagster as dg

from nachfass.core.shop import load_shop_settings


def slot_partitions(cron: str, fmt: str) -> dg.TimeWindowPartitionsDefinition:
    """Time slots of a cron in the shop's timezone from its `schedule_start` day; the last slot is the last
    one that has ended. (Dagster's partitions are the maintained cron arithmetic, DST included.)"""
    shop = load_shop_settings()
    start = datetime.combine(date.fromisoformat(shop.schedule_start), datetime.min.time())
    return dg.TimeWindowPartitionsDefinition(
        cron_schedule=cron, start=start.strftime(fmt), fmt=fmt, timezone=shop.timezone
    )


def slot_as_of(partitions: dg.TimeWindowPartitionsDefinition, partition_key: str) -> datetime:
    """A slot's logical time: the end of its window (when its schedule tick fires), in UTC."""
    return partitions.time_window_for_partition_key(partition_key).end.astimezone(UTC)


def last_fire(partitions: dg.TimeWindowPartitionsDefinition, moment: datetime) -> datetime:
    """The latest moment at or before `moment` at which the cron fired."""
    return partitions.get_prev_partition_window(moment, respect_bounds=False).end
