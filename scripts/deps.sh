#!/bin/sh
# Installs the Debian packages edgetrain needs (when root), or prints the
# apt-get line to run. Usage: scripts/deps.sh [extra packages...]
PKGS="build-essential zlib1g-dev libcjson-dev libcmocka-dev dataset-fashion-mnist $*"
missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" = 0 ]; then
    echo "installing:$missing" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >&2 && apt-get install -y -q --no-install-recommends $missing >&2
else
    echo "edgetrain needs these Debian packages; run as root:" >&2
    echo "  apt-get install$missing" >&2
    exit 1
fi
