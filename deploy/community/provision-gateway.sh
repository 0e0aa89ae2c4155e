#!/bin/bash
# Provision a new gateway of the community: broker credentials, its [uplink] config and secrets.
#   deploy/community/provision-gateway.sh MEMBER_ID [OUT_DIR]
# Environment: QUARTIER_COMMUNITY_CONFIG (default /etc/quartier/community-server.toml),
#              QUARTIER_BROKER_DIR (default /etc/quartier/broker).
# Copy OUT_DIR/MEMBER_ID/{uplink.toml,uplink-secrets.toml,community-ca.crt} to the gateway
# (/etc/quartier/), merge them into quartier.toml and its secrets file, restart quartier there.
set -euo pipefail
if [ $# -lt 1 ]; then
    echo "usage: $0 MEMBER_ID [OUT_DIR]" >&2
    exit 2
fi
member=$1
out=${2:-.}
config=${QUARTIER_COMMUNITY_CONFIG:-/etc/quartier/community-server.toml}
broker_dir=${QUARTIER_BROKER_DIR:-/etc/quartier/broker}
quartier community provision --config "$config" --broker-dir "$broker_dir" --member "$member" --out "$out"
if systemctl is-active --quiet mosquitto 2>/dev/null; then
    systemctl reload mosquitto
    echo "mosquitto reloaded: the gateway can connect"
fi
