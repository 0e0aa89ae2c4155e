"""How often the consume-now light changes colour on the scripted day (demo/signal_day.py), per local
hour, for the settings in use: `python bench/signal_flicker.py [--config quartier.toml] [--seed N]`;
``--seeds N``: the worst cloudy hour of each of N different days of clouds (seeds 1..N)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from demo.signal_day import CLOUDY, replay, scripted_day  # noqa: E402
from services.signal import SignalSettings, State  # noqa: E402


def settings_from(config: str | None) -> SignalSettings:
    if config is None:
        return SignalSettings()
    from gateway.config import load_config

    return SignalSettings.from_section(load_config(config).signal)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--config", help="a node's quartier.toml (default: today's defaults)")
    p.add_argument("--seed", type=int, default=18, help="the clouds' and appliances' seed (default 18)")
    p.add_argument("--seeds", type=int, help="instead: the worst cloudy hour for seeds 1..N")
    args = p.parse_args(argv)
    s = settings_from(args.config)
    cloudy = range(CLOUDY[0] // 3600, CLOUDY[1] // 3600)
    if args.seeds:
        worst = {seed: replay(scripted_day(seed), s).worst(cloudy) for seed in range(1, args.seeds + 1)}
        print(f"worst cloudy hour per seed (target <= 4): {worst}")
        print(f"over {args.seeds} days: max {max(worst.values())}, days above 4: {sum(w > 4 for w in worst.values())}")
        return
    r = replay(scripted_day(args.seed), s)
    print(f"signal settings: green {s.green_enter_w:g}/{s.green_exit_w:g} W, red {s.red_enter_w:g}/{s.red_exit_w:g} W, "
          f"hold {s.hold_s:g} s (up to {s.max_hold_s:g} s while flapping), "
          f"at most {s.max_changes_per_hour or 'any number of'} changes an hour")
    print("hour  changes")
    for h, n in enumerate(r.changes_per_hour):
        mark = "  passing clouds" if CLOUDY[0] <= h * 3600 < CLOUDY[1] else ""
        print(f"{h:02d}h   {n:3d} {'#' * n}{mark}")
    print(f"worst cloudy hour: {r.worst(cloudy)} changes (target <= 4); day: {sum(r.changes_per_hour)} changes; "
          + ", ".join(f"{st.value} {r.states[st] / 3600:.1f} h" for st in State))


if __name__ == "__main__":
    main()
