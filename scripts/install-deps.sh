#!/bin/bash
# Installs the Debian 12 packages that building and testing stage1-vm need,
# skipping those already installed. Run as root.
set -euo pipefail

packages=(
	# QEMU bundled into the image, and its firmware
	qemu-system-x86
	# guest kernel source and its build dependencies
	linux-source-6.1 build-essential flex bison bc libelf-dev libssl-dev xz-utils cpio kmod
	# guest system (systemd, systemd-journald), and journalctl for the journal tests
	systemd
	# test images and the test driver
	busybox-static util-linux iproute2 procps
	# the CNI plugins run iptables on the host (ptp and bridge ipMasq, portmap, firewall)
	iptables
)

missing=()
for p in "${packages[@]}"; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
		missing+=("$p")
	fi
done
if [[ ${#missing[@]} -eq 0 ]]; then
	exit 0
fi

if [[ $(id -u) -ne 0 ]]; then
	echo "install-deps: missing Debian packages: ${missing[*]}; run 'sudo scripts/install-deps.sh'" >&2
	exit 1
fi
echo "install-deps: installing ${missing[*]}"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
