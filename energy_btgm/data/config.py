"""What each data step does, as frozen dataclasses: the one place their defaults live (the CLI and the
Prefect flows read them from here). Standard library only, so that ``energy-btgm --help`` stays fast."""

from __future__ import annotations

import dataclasses
import zoneinfo

from energy_btgm.errors import ParameterError

RESOLUTIONS_MIN = {"15min": 15, "30min": 30, "60min": 60}


@dataclasses.dataclass(frozen=True)
class SynthConfig:
    """What to generate. Units in names; defaults give a year of a mid-latitude European region."""

    households: int = 300
    start: str = "2023-01-02"  # a Monday, local date
    weeks: int = 52
    resolution: str = "30min"
    tz: str = "Europe/Paris"
    seed: int = 0
    heating_share: float = 0.35  # share of homes with electric space heating
    ev_share: float = 0.02  # share of homes with an electric vehicle (few in London 2013)
    vacation_share: float = 0.05  # share of household-weeks spent away (base load only)
    heating_threshold_c: float = 15.0  # heating load grows as the temperature falls below this
    defects: bool = False
    chunk_households: int = 100  # households per written chunk (bounds memory)

    def validate(self) -> None:
        """Raise ValueError naming the bad field and the fix."""
        if self.households < 1:
            raise ParameterError(f"--households must be at least 1, got {self.households}")
        if self.weeks < 1:
            raise ParameterError(f"--weeks must be at least 1, got {self.weeks}")
        if self.resolution not in RESOLUTIONS_MIN:
            raise ParameterError(f"--resolution must be one of {', '.join(RESOLUTIONS_MIN)}, got {self.resolution!r}")
        try:
            zoneinfo.ZoneInfo(self.tz)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ParameterError(f"--tz {self.tz!r} is not a known time zone; use an IANA name such as Europe/Paris") from None
        import pandas as pd

        try:
            start = pd.Timestamp(self.start)
        except ValueError:
            raise ParameterError(f"--start {self.start!r} is not a date; use YYYY-MM-DD") from None
        if start.day_of_week != 0 or start != start.normalize():
            raise ParameterError(f"--start must be a Monday at 00:00 (weeks run Monday to Sunday), got {self.start} ({start.day_name()})")
        for name in ("heating_share", "ev_share", "vacation_share"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ParameterError(f"{name} must be in [0, 1], got {v}")

    @property
    def interval_min(self) -> int:
        return RESOLUTIONS_MIN[self.resolution]


@dataclasses.dataclass(frozen=True)
class IngestConfig:
    """How to read and clean. Units in names."""

    fmt: str = "long"  # long | lcl | wide
    tz: str = "Europe/Paris"  # the meters' local zone: weekly curves start Monday 00:00 there
    source_tz: str | None = None  # zone of the files' naive timestamps (LCL: UTC); None: ``tz``
    unit: str | None = None  # kwh | wh | kw; default per format (wide: kw, else kwh)
    resolution: str = "auto"  # auto | 15min | 30min | 60min (coarser than native: summed)
    meter_col: str = "meter_id"
    time_col: str = "timestamp"
    value_col: str = "kwh"
    delimiter: str | None = None
    max_kwh_per_30min: float = 10.0  # plausibility bound, scaled by the interval
    max_gap_h: float = 2.0  # gaps up to this long are filled linearly
    # a meter reading 0, or one same value, for longer than this is stuck: quarantined (0: no check).
    # 24 h: on Low Carbon London 2013 no meter repeats a non-zero value for more than 19.5 h, while 13 of
    # 325 read 0 for more than a day (up to 86 days: off or vacant)
    stuck_hours: float = 24.0

    def validate(self) -> None:
        if self.fmt not in ("long", "lcl", "wide"):
            raise ParameterError(f"--format must be long, lcl or wide, got {self.fmt!r}")
        if self.unit not in (None, "kwh", "wh", "kw"):
            raise ParameterError(f"--unit must be kwh, wh or kw, got {self.unit!r}")
        if self.resolution != "auto" and self.resolution not in RESOLUTIONS_MIN:
            raise ParameterError(f"--resolution must be auto, 15min, 30min or 60min, got {self.resolution!r}")
        if not self.stuck_hours >= 0:
            raise ParameterError(f"--stuck-hours must be >= 0 (0 turns the check off), got {self.stuck_hours}")
        for flag, zone in (("--tz", self.tz), ("--source-tz", self.source_tz or self.tz)):
            try:
                zoneinfo.ZoneInfo(zone)
            except (zoneinfo.ZoneInfoNotFoundError, ValueError):
                raise ParameterError(f"{flag} {zone!r} is not a known time zone; use an IANA name such as Europe/London or UTC") from None

    @property
    def value_unit(self) -> str:
        return self.unit or ("kw" if self.fmt == "wide" else "kwh")


@dataclasses.dataclass(frozen=True)
class CurvesConfig:
    group_sizes: tuple[int, ...] = (10, 100)
    draws: int = 200  # groups drawn per week and group size
    seed: int = 0
    max_missing: float = 0.10  # max share of missing or filled intervals in a household-week
    split: tuple[float, float, float] = (0.7, 0.15, 0.15)  # train, validation, test shares of weeks

    def validate(self) -> None:
        if not self.group_sizes or min(self.group_sizes) < 1:
            raise ParameterError(f"--group-sizes must be positive integers, got {list(self.group_sizes)}")
        if self.draws < 1:
            raise ParameterError(f"--draws must be at least 1, got {self.draws}")
        if not 0 <= self.max_missing < 1:
            raise ParameterError(f"--max-missing must be in [0, 1), got {self.max_missing}")
