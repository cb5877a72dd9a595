"""`sweep --auto N`: find the server's range, then sweep request rates across it (guidellm's sweep).

Two closed-loop levels come first: one stream (the synchronous rate, a lower bound on any useful
rate) and the top ``--concurrency`` (the saturation throughput). Then N open-loop levels at rates
spread evenly strictly between the two, each capped at the top concurrency. The sweep's document
lists the levels by load, synchronous first and saturation last, so its curve and knee read from
light to heavy load.
"""

from __future__ import annotations

from dataclasses import dataclass

from tokenbench.aggregator.schema import Report
from tokenbench.producer.arrivals import ArrivalSchedule


@dataclass(frozen=True)
class AutoSweep:
    rates: int  # open-loop levels between the synchronous and the saturation rate
    concurrency: int  # the saturation level's concurrency, and every rate level's cap

    def rates_between(self, synchronous_rps: float, saturation_rps: float) -> list[float]:
        """``rates`` request rates evenly spaced strictly between the two measured rates, rounded to
        3 significant digits (a level's name stays readable); empty when the saturation rate is not
        above the synchronous one (nothing to sweep)."""
        if saturation_rps <= synchronous_rps:
            return []
        step = (saturation_rps - synchronous_rps) / (self.rates + 1)
        return [float(f"{synchronous_rps + step * k:.3g}") for k in range(1, self.rates + 1)]

    def schedules(self, template: ArrivalSchedule | None, rates: list[float]) -> list[ArrivalSchedule]:
        """Each rate's schedule: the --arrival, --burstiness and --seed given (Poisson by default)."""
        base = template or ArrivalSchedule(rate=1.0)
        return [ArrivalSchedule(rate=rate, arrival=base.arrival, burstiness=base.burstiness, seed=base.seed)
                for rate in rates]


def by_load(reports: list[Report]) -> list[Report]:
    """The reports of an auto sweep, in the order they ran (synchronous, saturation, then the rates),
    put in order of load: synchronous, the rates, saturation."""
    if len(reports) < 2:
        return reports
    return [reports[0], *reports[2:], reports[1]]
