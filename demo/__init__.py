"""Demo and simulation tooling — never part of a production node or server.

Runs on a developer's or volunteer's machine: a simulated e-MUCS meter behind a pseudo-terminal
(``meter``, ``pty_meter``, ``source``), an emulated Fluksometer (``flukso_emulator``), a whole
community on one machine (``community``) and a generated example year (``example_year``).
"""
