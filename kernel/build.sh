#!/bin/bash
# Builds the guest kernel from Debian's linux-source-6.1 with the options in
# kernel/guest.config, and caches the bzImage next to OUTPUT_BZIMAGE by the
# hash of the config and the source package's version.
#
# Usage: kernel/build.sh OUTPUT_BZIMAGE
set -euo pipefail

out=${1:?usage: kernel/build.sh OUTPUT_BZIMAGE}
mkdir -p "$(dirname "$out")"
out=$(cd "$(dirname "$out")" && pwd)/$(basename "$out")
here=$(cd "$(dirname "$0")" && pwd)
tarball=/usr/src/linux-source-6.1.tar.xz

if [[ ! -f $tarball ]]; then
	echo "kernel/build.sh: $tarball not found; run scripts/install-deps.sh (package linux-source-6.1)" >&2
	exit 1
fi

version=$(dpkg-query -W -f='${Version}' linux-source-6.1)
key=$( (cat "$here/guest.config"; echo "$version") | sha256sum | cut -c1-16)
cache=$(dirname "$out")/kernel-$key
mkdir -p "$cache"

if [[ -f $cache/bzImage ]]; then
	echo "kernel: using cached $cache/bzImage (linux-source-6.1 $version)"
	cp "$cache/bzImage" "$out"
	exit 0
fi

src=$cache/src
rm -rf "$src"
mkdir -p "$src"
echo "kernel: unpacking linux-source-6.1 $version"
tar -xf "$tarball" -C "$src" --strip-components=1

cd "$src"
echo "kernel: configuring (tinyconfig + kernel/guest.config)"
make -s tinyconfig
KCONFIG_CONFIG=.config scripts/kconfig/merge_config.sh -m .config "$here/guest.config" >/dev/null 2>&1
make -s olddefconfig 2>&1 | grep -v 'changes choice state' || true

# Every option in the fragment must survive olddefconfig; a silently dropped
# option gives a kernel that boots but lacks a feature.
missing=0
while IFS= read -r line; do
	if [[ $line =~ ^(CONFIG_[A-Z0-9_]+)=n$ ]]; then
		if grep -q "^${BASH_REMATCH[1]}=" .config; then
			echo "kernel: option enabled although the fragment disables it: $line" >&2
			missing=1
		fi
		continue
	fi
	[[ $line =~ ^CONFIG_[A-Z0-9_]+=y$ ]] || continue
	if ! grep -qx "$line" .config; then
		echo "kernel: option dropped by olddefconfig: $line" >&2
		missing=1
	fi
done <"$here/guest.config"
if [[ $missing -ne 0 ]]; then
	exit 1
fi

jobs=$(nproc)
echo "kernel: building bzImage with -j$jobs (about 4 minutes on 2 cores)"
start=$(date +%s)
make -j"$jobs" bzImage 2>&1 | while IFS= read -r l; do
	case $l in
	*" CC "* | *" LD "* | *" AR "*) count=$((${count:-0} + 1)); if ((count % 200 == 0)); then echo "kernel: $count objects built"; fi ;;
	*warning* | *error* | *Error*) echo "$l" ;;
	esac
done
if [[ ! -f arch/x86/boot/bzImage ]]; then
	echo "kernel: build failed; rerun 'make -C $src bzImage' to see the full output" >&2
	exit 1
fi
echo "kernel: built in $(($(date +%s) - start)) s"
cp arch/x86/boot/bzImage "$cache/bzImage"
cp .config "$cache/config"
rm -rf "$src"
cp "$cache/bzImage" "$out"
