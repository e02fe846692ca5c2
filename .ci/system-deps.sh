#!/usr/bin/env bash
# Install the system packages that tests need (a headless browser, PostgreSQL, Orthanc with its
# DICOMweb plugin, dicom3tools' dciodvfy, podman with mmdebstrap and runc for the image build test)
# when missing.
# Uses apt-get as root (or through sudo); elsewhere it says what to install and carries on.
set -uo pipefail

missing=()
if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then
  missing+=(chromium)
fi
if ! command -v initdb >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  missing+=(postgresql)
fi
if ! command -v dciodvfy >/dev/null 2>&1; then
  missing+=(dicom3tools)
fi
if ! command -v Orthanc >/dev/null 2>&1; then
  missing+=(orthanc)
fi
if [ ! -e /usr/share/orthanc/plugins/libOrthancDicomWeb.so ]; then
  missing+=(orthanc-dicomweb)
fi
for tool in podman mmdebstrap runc; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if ! command -v apt-get >/dev/null 2>&1; then
  echo "system-deps: no apt-get here; install ${missing[*]} yourself for the browser, database and DICOM tests" >&2
  exit 0
fi
sudo=()
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo=(sudo -n)
  else
    echo "system-deps: not root; install ${missing[*]} for the browser, database and DICOM tests" >&2
    exit 0
  fi
fi
echo "system-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq >/dev/null \
  && "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
  || echo "system-deps: could not install ${missing[*]}; the tests that need them will say so" >&2
exit 0
