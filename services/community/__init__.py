"""Runs on the community's server (or an operator's laptop, for ``simulate`` and ``reconcile``).

``server`` gathers every member's quarter-hours over MQTT, allocates per sharing operation (``roster``,
``ledger``) and sends each node its share and the live totals; ``api`` serves the operator page;
``reconcile`` and ``central`` bring in the grid operator's binding figures; ``broker`` and
``provision`` write the Mosquitto security and each gateway's credentials; ``simulate`` compares keys
over a year. The node↔server contract is ``gateway.wire``, shared with the node's uplink.
"""
