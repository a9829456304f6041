#!/usr/bin/env bash
# Installs what the fault-injection harness needs on a Debian/Ubuntu machine:
#   - iproute2  (`ip`: network namespaces, veth pairs, the bridge)   -> partitions
#   - iptables  (`iptables`: silent DROP rules inside node namespaces) -> partitions
#   - faketime  (libfaketime + `faketime`)                             -> clock nemesis
# Idempotent: installs only what is missing and runs `apt-get update` only when apt has no
# candidate for a missing package. Needs root. Process faults (kill, pause) need none of this.
set -euo pipefail

say() { printf 'install-deps: %s\n' "$*"; }
die() { printf 'install-deps: error: %s\n' "$*" >&2; exit 1; }

if [[ "$(id -u)" -ne 0 ]]; then
    die "must run as root (it installs packages with apt-get): try 'sudo $0'"
fi
command -v apt-get >/dev/null 2>&1 ||
    die "apt-get not found: install iproute2, iptables and faketime with this system's package manager"

# command that proves the package is usable -> Debian package providing it
declare -A package_for_command=(
    [ip]=iproute2
    [iptables]=iptables
    [faketime]=faketime
)

missing_packages=()
for command_name in ip iptables faketime; do
    package_name="${package_for_command[$command_name]}"
    if command -v "$command_name" >/dev/null 2>&1; then
        say "$command_name found ($(command -v "$command_name")), $package_name already installed"
    else
        say "$command_name missing, will install $package_name"
        missing_packages+=("$package_name")
    fi
done

if [[ ${#missing_packages[@]} -eq 0 ]]; then
    say "nothing to install"
else
    export DEBIAN_FRONTEND=noninteractive
    needs_update=0
    for package_name in "${missing_packages[@]}"; do
        candidate="$(apt-cache policy "$package_name" 2>/dev/null | awk '/Candidate:/ {print $2}')"
        if [[ -z "$candidate" || "$candidate" == "(none)" ]]; then
            needs_update=1
        fi
    done
    if [[ $needs_update -eq 1 ]]; then
        say "package lists lack a candidate: running apt-get update"
        apt-get update -q
    fi
    say "installing: ${missing_packages[*]}"
    apt-get install -y -q --no-install-recommends "${missing_packages[@]}"
fi

# The harness drives whatever `iptables` points at. Report the variant so a failing run can be
# diagnosed; both nf_tables and legacy work when the kernel has the matching support.
if command -v iptables >/dev/null 2>&1; then
    say "iptables variant: $(iptables -V 2>&1)"
    if ! iptables -S OUTPUT >/dev/null 2>&1; then
        if command -v iptables-legacy >/dev/null 2>&1 && iptables-legacy -S OUTPUT >/dev/null 2>&1; then
            say "iptables (nf_tables) does not work on this kernel; switching the alternative to iptables-legacy"
            update-alternatives --set iptables /usr/sbin/iptables-legacy
        else
            die "iptables is installed but cannot list the filter table: the kernel may lack netfilter support"
        fi
    fi
fi

for command_name in ip iptables faketime; do
    command -v "$command_name" >/dev/null 2>&1 || die "$command_name still missing after install"
done
say "ok: ip, iptables and faketime are available"
