#!/usr/bin/env bash
# Make Vulkan rendering available to SAPIEN / ManiSkill 3 without touching the system.
#
# * A machine with a GPU Vulkan driver (NVIDIA ICD json or a working nvidia-smi): nothing to do.
# * Otherwise: download mesa 25's software Vulkan driver (lavapipe) from Debian bookworm-backports with a
#   PRIVATE apt configuration (own sources list, lists and cache in a temp dir; /etc/apt is not modified),
#   unpack it with `dpkg -x` into <repo>/.vulkan/root, and write
#     .vulkan/lvp_icd.json   ICD manifest whose library_path is the absolute path of libvulkan_lvp.so
#     .vulkan/preload.txt    absolute paths of locally unpacked shared libraries that must be loaded before the
#                            driver (a Vulkan loader when the system has none; any dependency the system lacks).
#   `rla_pipeline.sim.vulkan.ensure_vulkan()` reads both; no LD_LIBRARY_PATH export is needed.
# Idempotent: a second run only checks that the files exist. Run as root or as a user (apt-get download and
# dpkg -x need no root rights when lists and cache live in a temp dir).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="$REPO/.vulkan"
ICD="$DEST/lvp_icd.json"
SUITE="${VULKAN_BACKPORTS_SUITE:-bookworm-backports}"
BASE_SUITE="${SUITE%-backports}"

log() { echo "[setup_vulkan] $*"; }

if [[ -f /usr/share/vulkan/icd.d/nvidia_icd.json || -f /etc/vulkan/icd.d/nvidia_icd.json ]] \
    || nvidia-smi >/dev/null 2>&1; then
    log "GPU Vulkan driver present: nothing to do"
    exit 0
fi

if [[ -f "$ICD" && -f "$DEST/preload.txt" ]]; then
    lib="$(sed -n 's/.*"library_path": *"\([^"]*\)".*/\1/p' "$ICD")"
    if [[ -f "$lib" ]]; then
        log "lavapipe already set up in $DEST"
        exit 0
    fi
fi

for tool in apt-get dpkg dpkg-deb ldd; do
    command -v "$tool" >/dev/null || { log "ERROR: '$tool' not found (this script expects Debian/Ubuntu)"; exit 1; }
done

# The machine's configured Debian mirror (deb822 .sources or one-line .list), default deb.debian.org.
MIRROR="$(
    { cat /etc/apt/sources.list.d/*.sources 2>/dev/null; } | awk '
        /^URIs:/ {uri=$2} /^Suites:/ {for (i=2;i<=NF;i++) if ($i=="'"$BASE_SUITE"'") {print uri; exit}}'
)"
if [[ -z "$MIRROR" ]]; then
    MIRROR="$(
        { cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null || true; } | awk '
            $1=="deb" { for (i=2;i<=NF;i++) if ($i !~ /^\[/ && $i !~ /\]$/) {uri=$i; suite=$(i+1); break}
                        if (suite=="'"$BASE_SUITE"'") {print uri; exit} }'
    )"
fi
MIRROR="${MIRROR:-http://deb.debian.org/debian}"
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
SIGNED=""
[[ -f "$KEYRING" ]] && SIGNED="[signed-by=$KEYRING] "
log "mirror: $MIRROR ($BASE_SUITE + $SUITE)"

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
mkdir -p "$TMP/lists/partial" "$TMP/cache/archives/partial" "$TMP/debs"
cat >"$TMP/sources.list" <<SRC
deb ${SIGNED}$MIRROR $BASE_SUITE main
deb ${SIGNED}$MIRROR $SUITE main
SRC
APT_OPTS=(
    -o "Dir::Etc::SourceList=$TMP/sources.list" -o "Dir::Etc::SourceParts=/dev/null"
    -o "Dir::State::Lists=$TMP/lists" -o "Dir::Cache=$TMP/cache"
    -o "Debug::NoLocking=1" -o "APT::Sandbox::User=$(id -un)" -q
)
apt-get "${APT_OPTS[@]}" update >/dev/null

STAGE="$TMP/root"
mkdir -p "$STAGE"
fetch() {  # fetch PKG[/SUITE]...: download and unpack into the staging tree
    (cd "$TMP/debs" && apt-get "${APT_OPTS[@]}" download "$@" >/dev/null)
    for deb in "$TMP"/debs/*.deb; do dpkg -x "$deb" "$STAGE"; done
    rm -f "$TMP"/debs/*.deb
}

log "downloading mesa-vulkan-drivers from $SUITE"
fetch "mesa-vulkan-drivers/$SUITE"
LIBDIR="$(dirname "$(find "$STAGE" -name libvulkan_lvp.so | head -n1)")"
[[ -f "$LIBDIR/libvulkan_lvp.so" ]] || { log "ERROR: libvulkan_lvp.so not in the package"; exit 1; }

system_has() { ldconfig -p 2>/dev/null | grep -q "[[:space:]]$1 "; }

# A Vulkan loader: the system's libvulkan1, else a local copy (SAPIEN also ships a fallback loader).
if ! system_has libvulkan.so.1; then
    log "no system libvulkan.so.1: unpacking libvulkan1 locally"
    fetch libvulkan1
fi

# Shared libraries the driver needs that neither the system nor the staging tree has: fetch their packages
# (the driver's own Depends list, newest version from either suite) until ldd resolves everything.
DEPENDS="$(apt-cache "${APT_OPTS[@]}" show "mesa-vulkan-drivers/$SUITE" 2>/dev/null \
    | sed -n 's/^Depends: //p' | head -n1 | tr ',' '\n' | sed 's/[ (].*//; s/^ *//' | grep -v '^$' || true)"
missing() { LD_LIBRARY_PATH="$LIBDIR" ldd "$LIBDIR/libvulkan_lvp.so" | awk '/not found/ {print $1}'; }
if [[ -n "$(missing)" ]]; then
    for pkg in $DEPENDS; do
        dpkg -s "$pkg" >/dev/null 2>&1 && continue
        log "system lacks $pkg: unpacking it locally"
        fetch "$pkg/$SUITE" 2>/dev/null || fetch "$pkg"
    done
fi
if [[ -n "$(missing)" ]]; then
    log "ERROR: libvulkan_lvp.so still misses: $(missing | tr '\n' ' ')"
    exit 1
fi

# Libraries to preload (dependencies first): everything unpacked that the driver or the loader links against.
PRELOAD="$TMP/preload.txt"
: >"$PRELOAD"
FINAL_LIBDIR="$DEST/root${LIBDIR#"$STAGE"}"
{ LD_LIBRARY_PATH="$LIBDIR" ldd "$LIBDIR/libvulkan_lvp.so"
  [[ -f "$LIBDIR/libvulkan.so.1" ]] && LD_LIBRARY_PATH="$LIBDIR" ldd "$LIBDIR/libvulkan.so.1"; } \
    | awk -v d="$LIBDIR/" 'index($3, d)==1 {print $3}' | sort -u | while read -r lib; do
        echo "$FINAL_LIBDIR/${lib#"$LIBDIR/"}" >>"$PRELOAD"
    done
[[ -f "$LIBDIR/libvulkan.so.1" ]] && echo "$FINAL_LIBDIR/libvulkan.so.1" >>"$PRELOAD"

# Publish atomically: build next to the destination, then swap.
NEW="$DEST.new.$$"
rm -rf "$NEW"
mkdir -p "$NEW"
mv "$STAGE" "$NEW/root"
awk '!seen[$0]++' "$PRELOAD" >"$NEW/preload.txt"
API="$(sed -n 's/.*"api_version": *"\([^"]*\)".*/\1/p' "$NEW/root/usr/share/vulkan/icd.d/lvp_icd.json" 2>/dev/null | head -n1)"
cat >"$NEW/lvp_icd.json" <<JSON
{
    "ICD": {
        "api_version": "${API:-1.3.0}",
        "library_path": "$FINAL_LIBDIR/libvulkan_lvp.so"
    },
    "file_format_version": "1.0.0"
}
JSON
rm -rf "$DEST.old"
[[ -e "$DEST" ]] && mv "$DEST" "$DEST.old"
mv "$NEW" "$DEST"
rm -rf "$DEST.old"
log "lavapipe installed: $ICD (preload: $(wc -l <"$DEST/preload.txt") libs)"
