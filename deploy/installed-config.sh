#!/usr/bin/env bash
# The configuration file as installed (by the .deb and by install.sh): config/pixxel-proxy.yaml
# with the paths the service uses set in it, so that the unit passes only --config and every
# subcommand (check-config, token, audit, cache, status) finds the same store and clients file
# from /etc/pixxel-proxy/pixxel-proxy.yaml. Usage: deploy/installed-config.sh > FILE
set -euo pipefail
cd "$(dirname "$0")/.."
sed -e 's|^# cache:$|cache:|' \
    -e 's|^#   directory: ./cache$|  directory: /var/lib/pixxel-proxy|' \
    -e 's|^# auth:$|auth:|' \
    -e 's|^#   clients_file: config/clients$|  clients_file: /etc/pixxel-proxy/clients|' \
    config/pixxel-proxy.yaml > /tmp/pixxel-proxy-installed-config.$$
# The lines the edits expect must be there: a reworded example must not ship comments only.
for line in '^cache:$' '^  directory: /var/lib/pixxel-proxy$' '^auth:$' '^  clients_file: /etc/pixxel-proxy/clients$'; do
    grep -q "$line" /tmp/pixxel-proxy-installed-config.$$ || { echo "installed-config: config/pixxel-proxy.yaml changed: no $line" >&2; rm -f /tmp/pixxel-proxy-installed-config.$$; exit 1; }
done
cat /tmp/pixxel-proxy-installed-config.$$
rm -f /tmp/pixxel-proxy-installed-config.$$
