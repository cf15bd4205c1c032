#!/usr/bin/env bash
# Builds the Debian package of pixxel-proxy with dpkg-deb (no debhelper): the binary in
# /usr/bin, the unit in /lib/systemd/system (where Debian 12 keeps them), the configuration
# and the clients file in /etc/pixxel-proxy as conffiles, the maintainer scripts, copyright,
# changelog, manual page and lintian overrides from deploy/debian/. Prints the .deb's path.
#
#   deploy/build-deb.sh [--binary PATH] [--out DIR] [--fast]
#
# Without --binary it builds the release binary with the Swift runtime linked in
# (--static-swift-stdlib), so the package needs no Swift toolchain: its Depends are the
# system libraries the binary still loads (libevent, OpenSSL, SQLite, ...), computed by
# dpkg-shlibdeps. --fast is for the tests: a debug binary (which loads the Swift runtime
# from the toolchain, not from a package) and light compression; such a package is for
# checking the layout and the scripts, not for installing elsewhere.
set -euo pipefail
cd "$(dirname "$0")/.."

binary="" out=".build/deb" fast=false
while [ $# -gt 0 ]; do
    case "$1" in
    --binary) binary="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --fast) fast=true; shift ;;
    *) echo "build-deb: unknown argument $1" >&2; exit 64 ;;
    esac
done

if [ -z "$binary" ]; then
    scripts/install-deps.sh
    # The commit the binary records for pixxel_proxy_build_info (Package.swift reads it).
    export PIXXEL_BUILD_COMMIT=${PIXXEL_BUILD_COMMIT:-$(git rev-parse --short=12 HEAD 2>/dev/null || true)}
    # Full RELRO and immediate binding, as Debian builds its own binaries (lintian: hardening);
    # the flags are make release's too.
    swift build -c release $(cat deploy/release-link-flags) --product pixxel-proxy >&2
    binary=.build/release/pixxel-proxy
fi
for tool in dpkg-deb dpkg-shlibdeps dpkg-parsechangelog; do
    command -v "$tool" >/dev/null || { echo "build-deb: $tool is missing (apt-get install dpkg-dev)" >&2; exit 1; }
done

# A binary that loads the Swift runtime dynamically would need the toolchain on the target.
swift_libs=$(readelf -d "$binary" | grep -o 'Shared library: \[lib\(swift\|Foundation\|_Foundation\|dispatch\|BlocksRuntime\)[^]]*' || true)
if [ -n "$swift_libs" ] && ! $fast; then
    echo "build-deb: $binary loads the Swift runtime (${swift_libs//Shared library: [/}); build it with --static-swift-stdlib" >&2
    exit 1
fi

version=$(dpkg-parsechangelog -l deploy/debian/changelog -S Version)
maintainer=$(dpkg-parsechangelog -l deploy/debian/changelog -S Maintainer)
arch=$(dpkg --print-architecture)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root="$work/root"
doc="$root/usr/share/doc/pixxel-proxy"

install -D -m 0755 "$binary" "$root/usr/bin/pixxel-proxy"
# What dh_strip does for an executable: no symbols, no .comment or .note sections.
strip --remove-section=.comment --remove-section=.note "$root/usr/bin/pixxel-proxy"
sed -e 's|/usr/local/bin/pixxel-proxy|/usr/bin/pixxel-proxy|g' \
    -e 's|^Documentation=.*|Documentation=man:pixxel-proxy(1) file:///usr/share/doc/pixxel-proxy/README.md.gz|' \
    -e 's|Installed by deploy/install.sh.|Installed by the pixxel-proxy Debian package.|' \
    deploy/pixxel-proxy.service > "$work/pixxel-proxy.service"
install -D -m 0644 "$work/pixxel-proxy.service" "$root/lib/systemd/system/pixxel-proxy.service"
# The Redis drop-in is an example: only an instance with a Redis on its host wants it.
install -D -m 0644 deploy/pixxel-proxy-redis.conf "$root/usr/share/doc/pixxel-proxy/examples/redis.conf"
deploy/installed-config.sh > "$work/pixxel-proxy.yaml"
install -D -m 0644 "$work/pixxel-proxy.yaml" "$root/etc/pixxel-proxy/pixxel-proxy.yaml"
# The clients file starts with its format explained and no client (the examples stay in doc).
sed '/^# Examples/,$d' config/clients.example > "$work/clients"
install -D -m 0644 "$work/clients" "$root/etc/pixxel-proxy/clients"

install -D -m 0644 deploy/debian/copyright "$doc/copyright"
install -D -m 0644 config/clients.example "$doc/examples/clients.example"
gzip -9n < deploy/debian/changelog > "$work/changelog.gz"
install -D -m 0644 "$work/changelog.gz" "$doc/changelog.gz"
gzip -9n < README.md > "$work/README.md.gz"
install -D -m 0644 "$work/README.md.gz" "$doc/README.md.gz"
gzip -9n < deploy/debian/pixxel-proxy.1 > "$work/pixxel-proxy.1.gz"
install -D -m 0644 "$work/pixxel-proxy.1.gz" "$root/usr/share/man/man1/pixxel-proxy.1.gz"
install -D -m 0644 deploy/debian/lintian-overrides "$root/usr/share/lintian/overrides/pixxel-proxy"

# Depends: the packages of the shared libraries the binary loads. dpkg-shlibdeps wants a
# debian/control to read; a minimal one is enough.
mkdir -p "$work/debian"
printf 'Source: pixxel-proxy\n\nPackage: pixxel-proxy\nArchitecture: any\n' > "$work/debian/control"
shlibdeps_options=()
# The debug binary's Swift runtime comes from the toolchain, which no package provides.
$fast && shlibdeps_options+=(--ignore-missing-info)
depends=$(cd "$work" && dpkg-shlibdeps "${shlibdeps_options[@]}" -O root/usr/bin/pixxel-proxy 2>"$work/shlibdeps.log" \
    | sed -n 's/^shlibs:Depends=//p') || { cat "$work/shlibdeps.log" >&2; exit 1; }
# Packed relative relocations (DT_RELR, deploy/release-link-flags) need glibc 2.36's loader:
# the binary asks for the version GLIBC_ABI_DT_RELR, which an older glibc refuses at start, but
# dpkg-shlibdeps knows symbols only and says 2.35.
libc_minimum=$(printf '%s' "$depends" | sed -nE 's/.*libc6 \(>= ([^)]*)\).*/\1/p')
if readelf -d "$root/usr/bin/pixxel-proxy" | grep -q '(RELR)' && [ -n "$libc_minimum" ] \
    && dpkg --compare-versions "$libc_minimum" lt 2.36; then
    depends=$(printf '%s' "$depends" | sed -E 's/libc6 \(>= [^)]*\)/libc6 (>= 2.36)/')
fi

install -d -m 0755 "$root/DEBIAN"
for script in postinst prerm postrm; do
    install -m 0755 "deploy/debian/$script" "$root/DEBIAN/$script"
done
printf '/etc/pixxel-proxy/pixxel-proxy.yaml\n/etc/pixxel-proxy/clients\n' > "$root/DEBIAN/conffiles"
chmod 0644 "$root/DEBIAN/conffiles"
installed_size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
sed -e "s|@VERSION@|$version|" -e "s|@ARCH@|$arch|" -e "s|@MAINTAINER@|$maintainer|" \
    -e "s|@INSTALLED_SIZE@|$installed_size|" -e "s|@DEPENDS@|$depends|" deploy/debian/control.in > "$root/DEBIAN/control"
(cd "$root" && find . -type f ! -path './DEBIAN/*' -printf '%P\0' | sort -z | xargs -0 md5sum) > "$root/DEBIAN/md5sums"
chmod 0644 "$root/DEBIAN/md5sums" "$root/DEBIAN/control"

mkdir -p "$out"
deb="$out/pixxel-proxy_${version}_${arch}.deb"
compression=(-Zxz)
$fast && compression=(-Zgzip -z1)
dpkg-deb --root-owner-group "${compression[@]}" --build "$root" "$deb" >&2
echo "$deb"
