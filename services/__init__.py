"""Community-side services: the allocation engine and the tools around it.

``services.allocation`` is the pure engine (numpy, no I/O); ``services.simulate`` compares keys over
a year of data; ``services.cli`` registers the ``quartier allocate`` and ``quartier simulate``
commands. The web service lives here too and runs the same engine on live quarter-hours.
"""
