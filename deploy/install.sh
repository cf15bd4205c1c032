#!/usr/bin/env bash
# Installs pixxel-proxy as a systemd service. Idempotent: it never overwrites a configuration
# or clients file that exists, and creates nothing else. DESTDIR stages into another root
# (packaging, tests); PREFIX defaults to /usr/local; BIN names a prebuilt binary (default:
# build a release one).
set -euo pipefail
cd "$(dirname "$0")/.."

DESTDIR=${DESTDIR:-}
PREFIX=${PREFIX:-/usr/local}
# Beside the Debian package, this would put a second binary in /usr/local/bin and a unit in
# /etc/systemd/system that shadows the package's: refuse, and say what to do instead. Any
# state with files on disk counts (held, half-configured, unpacked), not "install ok installed"
# alone; only none at all, or the configuration files a removal keeps, let it through.
package_state=$(command -v dpkg-query >/dev/null 2>&1 && dpkg-query -W -f '${db:Status-Status}' pixxel-proxy 2>/dev/null || true)
if [ -n "$package_state" ] && [ "$package_state" != "not-installed" ] && [ "$package_state" != "config-files" ]; then
    echo "install.sh: the pixxel-proxy Debian package is installed; upgrade it with a newer .deb instead." >&2
    echo "  For the Redis drop-in: cp /usr/share/doc/pixxel-proxy/examples/redis.conf /etc/systemd/system/pixxel-proxy.service.d/" >&2
    exit 1
fi
BIN=${BIN:-}
if [ -z "$BIN" ]; then
    scripts/install-deps.sh
    # The commit the binary records for pixxel_proxy_build_info (Package.swift reads it).
    export PIXXEL_BUILD_COMMIT=${PIXXEL_BUILD_COMMIT:-$(git rev-parse --short=12 HEAD 2>/dev/null || true)}
    swift build -c release $(cat deploy/release-link-flags) --product pixxel-proxy
    BIN=.build/release/pixxel-proxy
fi

etc="$DESTDIR/etc/pixxel-proxy"
install -D -m 0755 "$BIN" "$DESTDIR$PREFIX/bin/pixxel-proxy"
sed "s|/usr/local/bin/pixxel-proxy|$PREFIX/bin/pixxel-proxy|g; s|/usr/local/share/doc|$PREFIX/share/doc|" \
    deploy/pixxel-proxy.service > "$DESTDIR/tmp-pixxel-proxy.service.$$"
install -D -m 0644 "$DESTDIR/tmp-pixxel-proxy.service.$$" "$DESTDIR/etc/systemd/system/pixxel-proxy.service"
rm -f "$DESTDIR/tmp-pixxel-proxy.service.$$"
install -D -m 0644 README.md "$DESTDIR$PREFIX/share/doc/pixxel-proxy/README.md"
# With a Redis on this host for the shared tier: order after it and pull it in (Wants=).
if [ "${WITH_REDIS:-0}" = 1 ]; then
    install -D -m 0644 deploy/pixxel-proxy-redis.conf "$DESTDIR/etc/systemd/system/pixxel-proxy.service.d/redis.conf"
fi
install -d -m 0755 "$etc"
if [ ! -e "$etc/pixxel-proxy.yaml" ]; then
    deploy/installed-config.sh > "$etc/pixxel-proxy.yaml.new"
    chmod 0644 "$etc/pixxel-proxy.yaml.new"
    mv "$etc/pixxel-proxy.yaml.new" "$etc/pixxel-proxy.yaml"
fi
install -m 0644 config/clients.example "$etc/clients.example"
# Hashes only, no secret: readable by the service's dynamic user.
[ -e "$etc/clients" ] || install -m 0644 /dev/null "$etc/clients"

if [ -z "$DESTDIR" ] && command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    systemctl daemon-reload
fi

cat <<TXT
pixxel-proxy installed: $PREFIX/bin/pixxel-proxy, /etc/systemd/system/pixxel-proxy.service, /etc/pixxel-proxy/.
Next steps:
  1. Put the Pixxel API key in the credential file (read only by systemd):
       install -m 0600 /dev/stdin /etc/pixxel-proxy/api_key <<< 'YOUR_API_KEY'
  2. Add a token per client (printed once):
       pixxel-proxy token add dashboards --scopes read
  3. Review /etc/pixxel-proxy/pixxel-proxy.yaml (listen.host is 127.0.0.1 by default), then:
       pixxel-proxy check-config
       systemctl enable --now pixxel-proxy
  After adding tokens: systemctl reload pixxel-proxy (SIGHUP reloads the clients file).
TXT
