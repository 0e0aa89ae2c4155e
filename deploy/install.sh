#!/usr/bin/env bash
# Install, upgrade or roll back Quartier on Raspberry Pi OS (bookworm) or any Debian 12 machine.
#
#   sudo deploy/install.sh              install, or upgrade to the checked-out version
#   sudo deploy/install.sh --light      the same, with the GPIO consume-now light
#   sudo deploy/install.sh --community  the community server instead of a node (deploy/community/README.md)
#   sudo deploy/install.sh --rollback   go back to the version that ran before the last switch
#   deploy/install.sh --list            the installed versions
#   deploy/install.sh --root DIR ...    write everything under DIR and change nothing on this machine
#                                       (CI; checking what an install would write)
#
# Layout: each version has its own virtual environment in /opt/quartier/releases/<version>/;
# /opt/quartier/current points at the one that runs and is switched in one atomic rename, so a power
# cut during an upgrade leaves either the old or the new version, never half of each.
# /opt/quartier/previous points at the one before, for --rollback. Configuration in /etc/quartier/
# and data in /var/lib/quartier/ are never overwritten. Running the script twice changes nothing.
# The guide: deploy/README.md.
set -euo pipefail

PROG=install.sh
SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ROOT=""
ACTION=install
VERSION=""
WITH_LIGHT=0
ROLE=node
NO_APT=0
FORCE=0
KEEP=3
PYTHON=python3
PIP_ARGS=()
SERVICE_USER=quartier
APT_PACKAGES=(python3 python3-venv python3-pip mosquitto sqlite3)

usage() {
    cat <<'USAGE'
Usage: install.sh [options]

  (no action)        install, or upgrade to the version in this checkout
  --rollback         switch back to the previous version and restart the services
  --list             list the installed versions

Options:
  --root DIR         install under DIR instead of / ; no user, no apt-get, no systemctl
  --version NAME     name of this release (default: the project version and the git commit)
  --light            also install and enable the GPIO consume-now light (quartier-light.service)
  --community        install the community server (quartier-community.service), not a node
  --no-apt           do not install Debian packages (they are already there)
  --force            rebuild the release even if it is already installed
  --keep N           keep this many releases besides current and previous (default 3)
  --python PATH      the Python 3.11+ that builds the virtual environment (default python3)
  --pip-arg ARG      pass ARG to pip install (repeatable), e.g. --pip-arg=--no-index
  -h, --help         this help
USAGE
}

say() { printf '%s: %s\n' "$PROG" "$*"; }
die() { printf '%s: error: %s\n' "$PROG" "$*" >&2; exit 1; }
# a step that needs a real system: done without --root, only reported with it
system() {
    if [ -n "$ROOT" ]; then
        say "skipped (--root): $*"
    else
        "$@"
    fi
}

while [ $# -gt 0 ]; do
    case "$1" in
        --root) [ $# -ge 2 ] || die "--root needs a directory"; ROOT=$2; shift ;;
        --root=*) ROOT=${1#*=} ;;
        --version) [ $# -ge 2 ] || die "--version needs a name"; VERSION=$2; shift ;;
        --version=*) VERSION=${1#*=} ;;
        --rollback) ACTION=rollback ;;
        --list) ACTION=list ;;
        --light) WITH_LIGHT=1 ;;
        --community) ROLE=community ;;
        --no-apt) NO_APT=1 ;;
        --force) FORCE=1 ;;
        --keep) [ $# -ge 2 ] || die "--keep needs a number"; KEEP=$2; shift ;;
        --keep=*) KEEP=${1#*=} ;;
        --python) [ $# -ge 2 ] || die "--python needs a path"; PYTHON=$2; shift ;;
        --python=*) PYTHON=${1#*=} ;;
        --pip-arg) [ $# -ge 2 ] || die "--pip-arg needs an argument"; PIP_ARGS+=("$2"); shift ;;
        --pip-arg=*) PIP_ARGS+=("${1#*=}") ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown option: $1" ;;
    esac
    shift
done

case "$KEEP" in ''|*[!0-9]*) die "--keep needs a whole number, not '$KEEP'" ;; esac
[ "$ROLE" = node ] || [ "$WITH_LIGHT" = 0 ] || die "--light is a node's: not with --community"
if [ -n "$ROOT" ]; then
    mkdir -p "$ROOT"
    ROOT=$(cd "$ROOT" && pwd)
    [ "$ROOT" != / ] || ROOT=""
fi

OPT=$ROOT/opt/quartier
RELEASES=$OPT/releases
ETC=$ROOT/etc/quartier
if [ "$ROLE" = community ]; then
    # the server's configuration, its secrets and the services: deploy/community/
    CONFIG=$ETC/community-server.toml
    SECRETS=$ETC/community-secrets.toml
    CONFIG_TEMPLATE=$SRC/deploy/community/community-server.toml
    SECRETS_TEMPLATE=$SRC/deploy/community/community-secrets.toml
    MAIN_UNIT=quartier-community.service
    ALL_UNITS=(quartier-community.service)
    APT_PACKAGES+=(openssl)  # the community CA and the broker's certificate (quartier community provision)
else
    CONFIG=$ETC/quartier.toml
    SECRETS=$ETC/secrets.toml
    CONFIG_TEMPLATE=$SRC/deploy/quartier.toml
    SECRETS_TEMPLATE=$SRC/deploy/secrets.toml
    MAIN_UNIT=quartier.service
    ALL_UNITS=(quartier-light.service quartier-web.service quartier.service)  # stop order
fi
# the pinned versions of every Python package a release installs
CONSTRAINTS=$SRC/deploy/constraints.txt
[ -f "$CONSTRAINTS" ] || die "$CONSTRAINTS missing: the release would install unpinned versions"

# -- helpers ---------------------------------------------------------------------------------------

release_of() {  # the release name a symlink (current, previous) points at, or nothing
    local link=$1
    if [ -L "$link" ]; then
        basename "$(readlink "$link")"
    fi
}

switch_link() {  # point $OPT/<name> at releases/<release> in one rename (atomic on the same fs)
    local name=$1 release=$2
    ln -sfn "releases/$release" "$OPT/.$name.new"
    mv -Tf "$OPT/.$name.new" "$OPT/$name"
}

source_hash() {  # a short digest of the files a release is built from
    (cd "$BUILD_DIR" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum) | sha256sum | cut -c1-10
}

default_version() {  # sets VERSION: <project version>-g<commit>, -dirty-<digest> with local changes,
    # -s<digest> without git (not in a subshell: it may make the source copy)
    local version commit
    # the checkout usually belongs to the login user, not root: tell git that is fine
    local -a git=(git -c "safe.directory=$SRC" -C "$SRC")
    version=$(sed -n 's/^version *= *"\(.*\)"/\1/p' "$SRC/pyproject.toml" | head -n 1)
    [ -n "$version" ] || die "$SRC/pyproject.toml: no version line"
    if command -v git >/dev/null 2>&1 && commit=$("${git[@]}" rev-parse --short=10 HEAD 2>/dev/null); then
        version="$version-g$commit"
        if [ -n "$("${git[@]}" status --porcelain 2>/dev/null)" ]; then
            source_copy
            version="$version-dirty-$(source_hash)"
        fi
    else
        source_copy
        version="$version-s$(source_hash)"
    fi
    VERSION=$version
}

wanted_units() {  # the units that should run: the light only when asked for, now or before
    local units=(quartier.service quartier-web.service)
    [ "$ROLE" = community ] && units=(quartier-community.service)
    # the local broker for Home Assistant (installed with the Debian packages)
    if [ -z "$ROOT" ] && systemctl cat mosquitto.service >/dev/null 2>&1; then
        units=(mosquitto.service "${units[@]}")
    fi
    if [ "$WITH_LIGHT" = 1 ]; then
        units+=(quartier-light.service)
    elif [ "$ROLE" = node ] && [ -z "$ROOT" ] && systemctl is-enabled --quiet quartier-light.service 2>/dev/null; then
        units+=(quartier-light.service)
    fi
    printf '%s\n' "${units[@]}"
}

services_start() {  # enable and start what is not running yet; leave running services alone
    local units
    mapfile -t units < <(wanted_units)
    system systemctl daemon-reload
    system systemctl enable --now "${units[@]}"
}

services_restart() {  # after a switch: Quartier's services run from the new /opt/quartier/current
    local units quartier_units=() u
    mapfile -t units < <(wanted_units)
    for u in "${units[@]}"; do
        case "$u" in quartier*) quartier_units+=("$u") ;; esac
    done
    system systemctl daemon-reload
    system systemctl enable --now "${units[@]}"
    system systemctl restart "${quartier_units[@]}"
}

daemon_came_up() {  # the main service answers READY=1 (Type=notify) within 60 s and stays up
    [ -n "$ROOT" ] && return 0
    for _ in $(seq 1 60); do
        if systemctl is-active --quiet "$MAIN_UNIT"; then
            sleep 5
            systemctl is-active --quiet "$MAIN_UNIT" && return 0
        fi
        if systemctl is-failed --quiet "$MAIN_UNIT"; then
            return 1
        fi
        sleep 1
    done
    return 1
}

# -- list and rollback -----------------------------------------------------------------------------

list_releases() {
    local current previous r mark
    current=$(release_of "$OPT/current")
    previous=$(release_of "$OPT/previous")
    [ -d "$RELEASES" ] || { say "no release installed under $OPT"; return 0; }
    # newest first (by install time)
    while IFS= read -r r; do
        mark=""
        [ "$r" = "$current" ] && mark=" (current)"
        [ "$r" = "$previous" ] && mark=" (previous)"
        [ -f "$RELEASES/$r/.complete" ] || mark="$mark (incomplete)"
        printf '%s%s\n' "$r" "$mark"
    done < <(ls -1t "$RELEASES")
}

rollback() {
    local current previous
    current=$(release_of "$OPT/current")
    previous=$(release_of "$OPT/previous")
    [ -n "$previous" ] || die "no previous release to go back to (see: install.sh --list)"
    [ -x "$RELEASES/$previous/venv/bin/quartier" ] || die "release $previous is incomplete; reinstall it"
    switch_link current "$previous"
    [ -n "$current" ] && switch_link previous "$current"
    say "current release is now $previous (was $current)"
    services_restart
    if ! daemon_came_up; then
        die "$MAIN_UNIT does not start on $previous either: see journalctl -u ${MAIN_UNIT%.service} -n 50"
    fi
    store_note "$previous"
}

store_note() {  # a store written by a newer schema cannot be read by an older release
    local release=$1
    [ -f "$ETC/store-backups" ] || return 0
    say "store backups made before upgrades (restore one only if $release refuses the store):"
    sed 's/^/    /' "$ETC/store-backups"
}

# -- install ---------------------------------------------------------------------------------------

check_python() {
    command -v "$PYTHON" >/dev/null 2>&1 || die "$PYTHON not found (apt-get install python3)"
    "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
        || die "$PYTHON is $("$PYTHON" -V 2>&1); Quartier needs Python 3.11 or newer (Raspberry Pi OS bookworm has it)"
    "$PYTHON" -c 'import venv, ensurepip' 2>/dev/null \
        || die "$PYTHON cannot create virtual environments: apt-get install python3-venv"
}

install_packages() {
    if [ "$NO_APT" = 1 ]; then
        say "not installing Debian packages (--no-apt): ${APT_PACKAGES[*]}"
        return 0
    fi
    system apt-get update -qq
    system env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${APT_PACKAGES[@]}"
}

create_user() {
    local groups=dialout
    [ "$ROLE" = community ] && groups=""  # no serial port, no GPIO
    if [ -z "$ROOT" ] && getent group gpio >/dev/null; then
        groups=dialout,gpio
    fi
    if [ -z "$ROOT" ] && id "$SERVICE_USER" >/dev/null 2>&1; then
        [ -z "$groups" ] || usermod -aG "$groups" "$SERVICE_USER"
        return 0
    fi
    system useradd --system --user-group ${groups:+--groups "$groups"} --home-dir /var/lib/quartier \
        --no-create-home --shell /usr/sbin/nologin --comment "Quartier metering gateway" "$SERVICE_USER"
}

BUILD_DIR=""
cleanup() { [ -z "$BUILD_DIR" ] || rm -rf "$BUILD_DIR"; }
trap cleanup EXIT

source_copy() {  # a clean copy of the checkout in $BUILD_DIR (not in a subshell: it sets the global)
    # pip would otherwise write build/ and *.egg-info into the checkout
    if [ -z "$BUILD_DIR" ]; then
        BUILD_DIR=$(mktemp -d)
        tar -C "$SRC" --exclude=.git --exclude=.venv --exclude=build --exclude=dist --exclude='*.egg-info' \
            --exclude=__pycache__ --exclude=.pytest_cache --exclude=.hypothesis --exclude=.ruff_cache \
            --exclude=.benchmarks -cf - . | tar -C "$BUILD_DIR" -xf -
    fi
}

build_release() {  # a virtual environment with Quartier from this checkout, in releases/<version>
    local release=$1 dir=$RELEASES/$1 extra=""
    [ "$WITH_LIGHT" = 1 ] && extra="[pi]"
    if [ -f "$dir/.complete" ] && [ "$FORCE" = 0 ]; then
        say "release $release is already installed (--force rebuilds it)"
        if [ "$WITH_LIGHT" = 1 ] && ! "$dir/venv/bin/python" -c 'import gpiozero' 2>/dev/null; then
            say "adding the GPIO light's packages (gpiozero, lgpio) to release $release"
            source_copy
            "$dir/venv/bin/python" -m pip install --quiet --disable-pip-version-check -c "$CONSTRAINTS" "${PIP_ARGS[@]}" "$BUILD_DIR$extra"
        fi
        return 0
    fi
    # built in place: a virtual environment cannot be moved (its scripts name their Python by path);
    # .complete, written last, marks a finished build, and a build cut short is started again
    mkdir -p "$RELEASES"
    rm -rf "$dir"
    source_copy
    say "building release $release in $dir (a few minutes on a Pi)"
    "$PYTHON" -m venv "$dir/venv"
    # the versions the tests ran (deploy/constraints.txt), not whatever PyPI has today
    "$dir/venv/bin/python" -m pip install --quiet --disable-pip-version-check -c "$CONSTRAINTS" "${PIP_ARGS[@]}" "$BUILD_DIR$extra"
    mkdir -p "$dir/share/hardware"
    cp "$SRC/deploy/README.md" "$dir/share/README.md"
    cp -R "$SRC/hardware/." "$dir/share/hardware/"
    # the community server's unit, configuration template and broker files (deploy/community/README.md)
    cp -R "$SRC/deploy/community" "$dir/share/community"
    cp "$SRC/deploy/quartier.toml" "$SRC/deploy/secrets.toml" "$CONSTRAINTS" "$dir/share/"
    {
        printf 'version=%s\n' "$release"
        printf 'source=%s\n' "$SRC"
        printf 'installed=%s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    } > "$dir/RELEASE"
    sync -f "$dir/venv"
    touch "$dir/.complete"
}

install_config() {
    mkdir -p "$ETC"
    chmod 0755 "$ETC"
    if [ -e "$CONFIG" ]; then
        say "keeping your configuration $CONFIG (the template is in /opt/quartier/current/share/)"
    else
        install -m 0644 "$CONFIG_TEMPLATE" "$CONFIG"
        say "wrote $CONFIG: edit it, then: sudo quartier $([ "$ROLE" = community ] && echo "community check --config" || echo "config check") $CONFIG"
    fi
    if [ ! -e "$SECRETS" ]; then
        install -m 0600 "$SECRETS_TEMPLATE" "$SECRETS"
    fi
    chmod 0600 "$SECRETS"
    system chown "$SERVICE_USER:$SERVICE_USER" "$SECRETS"
}

in_release() {  # run a program of a release; under --root the configuration's absolute secrets
    # path is the machine's, not the root's: point it into the root
    local release=$1 program=$2
    shift 2
    if [ -n "$ROOT" ]; then
        QUARTIER_DAEMON__SECRETS_FILE=$SECRETS "$RELEASES/$release/venv/bin/$program" "$@"
    else
        "$RELEASES/$release/venv/bin/$program" "$@"
    fi
}

check_config_with() {  # the new release must accept the configuration before it is switched to
    local release=$1
    if [ "$ROLE" = community ]; then
        local community
        community=$(sed -n 's/^community_file *= *"\([^"]*\)".*/\1/p' "$CONFIG" | head -n 1)
        case "$community" in /*) community=$ROOT$community ;; *) community=$ETC/$community ;; esac
        if [ ! -e "$community" ]; then  # a first install: the operator writes it next
            say "no community file yet ($community): write it, then: sudo quartier community check --config $CONFIG"
            return 0
        fi
        in_release "$release" quartier community check --config "$CONFIG" \
            || die "release $release does not accept $CONFIG (see above); nothing was switched"
        return 0
    fi
    if ! in_release "$release" quartier config check "$CONFIG"; then
        die "release $release does not accept $CONFIG (see above); nothing was switched. Fix the file, or keep the running version"
    fi
}

backup_store_if_migrating() {  # a schema migration is one-way: keep a copy for a rollback
    local release=$1 store backup
    [ "$ROLE" = node ] || return 0  # the ledger migrates itself and keeps its old rows
    store=$(in_release "$release" python -c 'import sys
from gateway.config import load_config
print(load_config(sys.argv[1]).store.path)' "$CONFIG" 2>/dev/null) || return 0
    store=$ROOT$store
    [ -f "$store" ] || return 0
    backup="$store.before-$release"
    if in_release "$release" python - "$store" "$backup" <<'PY'
import sqlite3, sys
from gateway.store import SCHEMA_VERSION
src = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True)
version = src.execute("PRAGMA user_version").fetchone()[0]
if version >= SCHEMA_VERSION:
    sys.exit(1)  # the new release reads this store as it is: no copy needed
dst = sqlite3.connect(sys.argv[2])
src.backup(dst)
dst.close()
PY
    then
        printf '%s  (schema before %s)\n' "$backup" "$release" >> "$ETC/store-backups"
        say "the new release upgrades the store's format; a copy of the old one is at $backup"
    fi
}

install_system_files() {
    mkdir -p "$ROOT/usr/local/bin"
    ln -sfn /opt/quartier/current/venv/bin/quartier "$ROOT/usr/local/bin/quartier"
    if [ "$ROLE" = community ]; then  # a server keeps its journal on disk: no journald drop-in
        install -D -m 0644 "$SRC/deploy/community/quartier-community.service" "$ROOT/etc/systemd/system/quartier-community.service"
        return 0
    fi
    install -D -m 0644 "$SRC/deploy/journald-quartier.conf" "$ROOT/etc/systemd/journald.conf.d/quartier.conf"
    install -D -m 0644 "$SRC/deploy/quartier.service" "$ROOT/etc/systemd/system/quartier.service"
    install -D -m 0644 "$SRC/deploy/quartier-web.service" "$ROOT/etc/systemd/system/quartier-web.service"
    install -D -m 0644 "$SRC/deploy/quartier-light.service" "$ROOT/etc/systemd/system/quartier-light.service"
    install -D -m 0644 "$SRC/deploy/99-quartier-p1.rules" "$ROOT/etc/udev/rules.d/99-quartier-p1.rules"
    system udevadm control --reload
    system udevadm trigger --subsystem-match=tty --action=add
    system systemctl restart systemd-journald
}

prune_releases() {  # keep current, previous and the KEEP newest others
    local current previous r n=0
    current=$(release_of "$OPT/current")
    previous=$(release_of "$OPT/previous")
    while IFS= read -r r; do
        if [ "$r" = "$current" ] || [ "$r" = "$previous" ]; then
            continue
        fi
        n=$((n + 1))
        if [ "$n" -gt "$KEEP" ]; then
            say "removing old release $r"
            rm -rf "${RELEASES:?}/$r"
        fi
    done < <(ls -1t "$RELEASES")
}

install_quartier() {
    local release old
    if [ -z "$ROOT" ] && [ "$(id -u)" != 0 ]; then
        die "run as root (sudo $0), or with --root DIR to write into a directory"
    fi
    [ -n "$VERSION" ] || default_version
    release=$VERSION
    case "$release" in ''|*/*|.*) die "bad release name '$release'" ;; esac
    install_packages
    check_python
    create_user
    old=$(release_of "$OPT/current")
    if [ "$old" = "$release" ] && [ "$FORCE" = 1 ]; then  # rebuilding the running release
        system systemctl stop "${ALL_UNITS[@]}" || true
    fi
    build_release "$release"
    install_config
    check_config_with "$release"
    install_system_files
    if [ "$old" = "$release" ]; then
        say "release $release is already the current one"
        if [ "$FORCE" = 1 ]; then
            services_restart
        else
            services_start
        fi
        prune_releases
        return 0
    fi
    if [ -n "$old" ]; then
        system systemctl stop "${ALL_UNITS[@]}" || true
    fi
    backup_store_if_migrating "$release"
    switch_link current "$release"
    [ -n "$old" ] && switch_link previous "$old"
    say "current release is now $release${old:+ (was $old)}"
    services_restart
    if ! daemon_came_up; then
        if [ -n "$old" ]; then
            say "$MAIN_UNIT does not start on $release: going back to $old"
            switch_link current "$old"
            switch_link previous "$release"
            services_restart
            die "upgrade to $release failed and was rolled back: see journalctl -u ${MAIN_UNIT%.service} -n 50"
        fi
        die "$MAIN_UNIT does not start: see journalctl -u ${MAIN_UNIT%.service} -n 50 and run: sudo quartier doctor"
    fi
    prune_releases
    if [ -z "$ROOT" ]; then
        if [ "$ROLE" = community ]; then
            say "done. Next: deploy/community/README.md (the broker, the first gateway)"
        else
            say "done. Next: sudo quartier doctor"
        fi
    else
        say "done: installed under $ROOT"
    fi
}

case "$ACTION" in
    install) install_quartier ;;
    rollback)
        if [ -z "$ROOT" ] && [ "$(id -u)" != 0 ]; then die "run as root (sudo $0 --rollback)"; fi
        rollback ;;
    list) list_releases ;;
esac
