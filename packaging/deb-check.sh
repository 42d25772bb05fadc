#!/usr/bin/env bash
# Builds the Debian package `onshi` with cargo-deb and checks it the way IT staff will meet it:
# the control file, the contents (both binaries, both units, the example configurations as
# conffiles, man pages, completions, docs), the maintainer scripts (user created, units neither
# enabled nor started), then `dpkg -x` into a scratch root where the extracted binaries make a PKI,
# enrol the facility into the extracted /etc/onshi/edge.toml and pass `check-config`. As root,
# with nothing of onshi installed, it also installs the package for real (dpkg -i), checks the user,
# directories and modes, removes it (configuration and data kept) and purges it, then cleans up
# what it made (ONSHI_DEB_INSTALL=0 skips this part).
#
#   packaging/deb-check.sh            package the debug binaries `cargo test --workspace` built
#                                     (cargo deb --no-build --profile dev: quick, for CI)
#   packaging/deb-check.sh --release  build and package release binaries (what ships)
#
# cargo-deb is installed (pinned) if missing. Ends with "deb: N passed, M failed".
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_DEB_VERSION=3.8.0
started=$(date +%s)
passed=0
failed=0
ok() { passed=$((passed + 1)); echo "ok: $*"; }
bad() { failed=$((failed + 1)); echo "FAILED: $*"; }
check() { # check DESCRIPTION COMMAND…
    local what=$1
    shift
    if "$@" >/dev/null 2>&1; then ok "$what"; else bad "$what"; fi
}

echo "== cargo-deb $CARGO_DEB_VERSION"
export PATH="$HOME/.cargo/bin:$PATH"
if ! cargo deb --version 2>/dev/null | grep -qx "cargo-deb $CARGO_DEB_VERSION"; then
    # Its own target directory, so that it neither waits for nor fills the workspace's.
    CARGO_TARGET_DIR="${TMPDIR:-/tmp}/cargo-deb-build" \
        cargo install cargo-deb --locked --version "$CARGO_DEB_VERSION" --quiet
    rm -rf "${TMPDIR:-/tmp}/cargo-deb-build"
fi
cargo deb --version
for tool in dpkg-deb dpkg; do
    command -v "$tool" >/dev/null || { echo "$tool is needed (a Debian system)"; exit 1; }
done

target=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
deb="$target/debian/onshi-check.deb"
rm -f "$deb"
echo "== building the package"
if [ "${1:-}" = "--release" ]; then
    cargo deb -p onshi-edge --locked --output "$deb"
else
    # The binaries the tests ran; cargo-deb warns that dev builds are not for release.
    cargo build --workspace --bins --locked --quiet
    cargo deb -p onshi-edge --locked --no-build --profile dev --output "$deb" 2>&1 |
        grep -v "dev profile is not supported\|cargo-deb is for making releases\|To enable debug symbols\|Cargo also supports custom profiles" || true
fi
[ -f "$deb" ] || { echo "no package at $deb"; exit 1; }
ls -l "$deb"

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

echo "== control"
dpkg-deb --info "$deb" >"$scratch/info"
check "Package: onshi" grep -q "^ Package: onshi$" "$scratch/info"
check "Version from Cargo.toml" grep -q "^ Version: $(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)-1$" "$scratch/info"
check "Depends names adduser and libc6" grep -Eq "^ Depends: .*adduser.*libc6|^ Depends: .*libc6.*adduser" "$scratch/info"

echo "== contents"
dpkg-deb --contents "$deb" | awk '{print $NF}' | sed 's#^\./#/#' >"$scratch/contents"
for f in /usr/bin/onshi-edge /usr/bin/onshi-reconciler \
    /usr/lib/systemd/system/onshi-edge.service /usr/lib/systemd/system/onshi-reconciler.service \
    /etc/onshi/edge.toml /etc/onshi/reconciler.toml \
    /usr/share/man/man1/onshi-edge.1.gz /usr/share/man/man1/onshi-reconciler.1.gz \
    /usr/share/bash-completion/completions/onshi-edge \
    /usr/share/bash-completion/completions/onshi-reconciler \
    /usr/share/doc/onshi/README.md /usr/share/doc/onshi/INSTALL.md /usr/share/doc/onshi/copyright; do
    check "contains $f" grep -qx "$f" "$scratch/contents"
done
dpkg-deb --contents "$deb" >"$scratch/listing"
check "configurations are mode 0640" grep -Eq '^-rw-r----- .*\./etc/onshi/edge.toml$' "$scratch/listing"
check "binaries are mode 0755" grep -Eq '^-rwxr-xr-x .*\./usr/bin/onshi-edge$' "$scratch/listing"

echo "== maintainer scripts"
dpkg-deb --control "$deb" "$scratch/control"
check "conffiles: edge.toml" grep -qx /etc/onshi/edge.toml "$scratch/control/conffiles"
check "conffiles: reconciler.toml" grep -qx /etc/onshi/reconciler.toml "$scratch/control/conffiles"
for s in postinst prerm postrm; do
    check "$s is a valid sh script" sh -n "$scratch/control/$s"
done
check "postinst creates the user onshi" grep -q "adduser --system .* onshi" "$scratch/control/postinst"
check "postinst never starts a unit" bash -c "! grep -Eq 'deb-systemd-invoke (start|\\\$_dh_action)|systemctl (--system )?(start|enable)' '$scratch/control/postinst'"
check "postinst enables a unit only if it was enabled before" bash -c \
    "[ \$(grep -c 'deb-systemd-helper enable' '$scratch/control/postinst') = \$(grep -c 'was-enabled' '$scratch/control/postinst') ]"
check "prerm stops the units on remove" grep -q "deb-systemd-invoke stop onshi-edge.service" "$scratch/control/prerm"
check "postrm never deletes state" bash -c "! grep -Eq 'rm -[rf]+ .*/var/lib' '$scratch/control/postrm'"

echo "== dpkg -x into a scratch root, then the extracted programs"
root="$scratch/root"
dpkg -x "$deb" "$root"
check "unit files as in packaging/systemd" cmp "$root/usr/lib/systemd/system/onshi-edge.service" packaging/systemd/onshi-edge.service
check "onshi-edge --version" "$root/usr/bin/onshi-edge" --version
check "onshi-reconciler --version" "$root/usr/bin/onshi-reconciler" --version
check "onshi-edge --help lists enroll" bash -c "'$root/usr/bin/onshi-edge' --help | grep -q enroll"
check "man pages are valid gzip" gzip -t "$root/usr/share/man/man1/onshi-edge.1.gz" "$root/usr/share/man/man1/onshi-reconciler.1.gz"
# The centre's side: a CA and the facility's certificate (in production these come from the centre).
"$root/usr/bin/onshi-reconciler" pki init --dir "$scratch/centre" --facility 1341234567 >/dev/null
check "enroll into the extracted /etc/onshi" "$root/usr/bin/onshi-edge" enroll \
    --pki "$root/etc/onshi/pki" --ca "$scratch/centre/ca.pem" \
    --cert "$scratch/centre/facility-1341234567.pem" --key "$scratch/centre/facility-1341234567.key" \
    --facility 1341234567 --config "$root/etc/onshi/edge.toml"
check "key installed with mode 0640" bash -c "[ \"\$(stat -c %a '$root/etc/onshi/pki/facility-1341234567.key')\" = 640 ]"
# The example names a placeholder reconciler (reconciler.example) that does not resolve: set it,
# as the install guide says, with a flag here.
out=$("$root/usr/bin/onshi-edge" check-config --config "$root/etc/onshi/edge.toml" \
    --data "$root/var/lib/onshi" --reconciler 127.0.0.1:7700 2>&1) && rc=0 || rc=$?
echo "$out"
if [ "$rc" = 0 ] && grep -q "ok: facility 1341234567" <<<"$out"; then
    ok "extracted onshi-edge check-config passes on the extracted, enrolled edge.toml"
else
    bad "extracted onshi-edge check-config (exit $rc)"
fi
check "the example still needs its reconciler set (check-config names it)" bash -c \
    "'$root/usr/bin/onshi-edge' check-config --config '$root/etc/onshi/edge.toml' 2>&1 | grep -q 'reconciler'"
check "extracted onshi-reconciler check-config passes on the extracted reconciler.toml" \
    "$root/usr/bin/onshi-reconciler" check-config --config "$root/etc/onshi/reconciler.toml" \
    --pki "$scratch/centre" --data "$scratch/reconciler-data"

install_round_trip() {
    echo "== dpkg -i, remove, purge (as root, on this machine)"
    local made_user=1
    id onshi >/dev/null 2>&1 && made_user=0
    DEBIAN_FRONTEND=noninteractive dpkg -i "$deb" >"$scratch/dpkg.log" 2>&1 || {
        cat "$scratch/dpkg.log"
        bad "dpkg -i"
        return
    }
    ok "dpkg -i"
    check "user onshi exists, a system user without a login shell" bash -c \
        "getent passwd onshi | grep -q ':/usr/sbin/nologin$' && [ \$(id -u onshi) -lt 1000 ]"
    check "/etc/onshi is root:onshi 0750" bash -c "[ \"\$(stat -c '%U:%G %a' /etc/onshi)\" = 'root:onshi 750' ]"
    check "/etc/onshi/edge.toml is root:onshi 0640" bash -c "[ \"\$(stat -c '%U:%G %a' /etc/onshi/edge.toml)\" = 'root:onshi 640' ]"
    check "/etc/onshi/pki is root:onshi 0750" bash -c "[ \"\$(stat -c '%U:%G %a' /etc/onshi/pki)\" = 'root:onshi 750' ]"
    check "/var/lib/onshi is onshi:onshi 0750" bash -c "[ \"\$(stat -c '%U:%G %a' /var/lib/onshi)\" = 'onshi:onshi 750' ]"
    check "the fallback data key /var/lib/onshi.key is onshi:onshi 0600, 64 hex digits" bash -c \
        "[ \"\$(stat -c '%U:%G %a' /var/lib/onshi.key)\" = 'onshi:onshi 600' ] && grep -Eqx '[0-9a-f]{64}' /var/lib/onshi.key"
    check "units installed, not enabled" bash -c \
        "[ -f /usr/lib/systemd/system/onshi-edge.service ] && ! ls /etc/systemd/system/*.wants/onshi-* 2>/dev/null | grep -q ."
    check "onshi-edge is on PATH" onshi-edge --version
    check "enroll as root gives the key to group onshi" bash -c \
        "onshi-edge enroll --ca '$scratch/centre/ca.pem' --cert '$scratch/centre/facility-1341234567.pem' \
         --key '$scratch/centre/facility-1341234567.key' --config /etc/onshi/edge.toml >/dev/null &&
         [ \"\$(stat -c '%U:%G %a' /etc/onshi/pki/facility-1341234567.key)\" = 'root:onshi 640' ]"
    check "the service user can read its configuration and key (check-config as onshi)" \
        setpriv --reuid=onshi --regid=onshi --clear-groups \
        onshi-edge check-config --config /etc/onshi/edge.toml --reconciler 127.0.0.1:7700
    echo "journal entry" >/var/lib/onshi/kept-by-remove
    DEBIAN_FRONTEND=noninteractive dpkg -r onshi >>"$scratch/dpkg.log" 2>&1 && ok "dpkg -r" || bad "dpkg -r"
    check "remove keeps the configuration" test -f /etc/onshi/edge.toml
    check "remove keeps the certificates and the data" test -f /etc/onshi/pki/facility-1341234567.key -a -f /var/lib/onshi/kept-by-remove
    check "remove takes the programs" bash -c "! test -e /usr/bin/onshi-edge"
    DEBIAN_FRONTEND=noninteractive dpkg -P onshi >>"$scratch/dpkg.log" 2>&1 && ok "dpkg -P" || bad "dpkg -P"
    check "purge removes the configuration files" bash -c "! test -e /etc/onshi/edge.toml"
    check "purge keeps the data and the keys" test -f /var/lib/onshi/kept-by-remove -a -f /etc/onshi/pki/facility-1341234567.key -a -f /var/lib/onshi.key
    check "purge leaves no permission override" bash -c "! dpkg-statoverride --list | grep -q /etc/onshi"
    # Leave the machine as it was.
    rm -rf /etc/onshi /var/lib/onshi /var/lib/onshi.key /var/lib/onshi-reconciler
    if [ "$made_user" = 1 ]; then
        userdel onshi >/dev/null 2>&1 || true
        groupdel onshi >/dev/null 2>&1 || true
    fi
}

if [ "${ONSHI_DEB_INSTALL:-1}" = 0 ]; then
    echo "== dpkg -i round trip skipped (ONSHI_DEB_INSTALL=0)"
elif [ "$(id -u)" != 0 ]; then
    echo "== dpkg -i round trip skipped (not root)"
elif dpkg -s onshi >/dev/null 2>&1 || [ -e /etc/onshi ] || [ -e /var/lib/onshi ] || [ -e /var/lib/onshi.key ]; then
    echo "== dpkg -i round trip skipped (onshi is installed or has files on this machine)"
else
    exec 9>/tmp/onshi-deb-check.lock
    flock 9
    install_round_trip
fi

echo "== the package in $(($(date +%s) - started)) s"
echo "deb: $passed passed, $failed failed"
[ "$failed" = 0 ]
