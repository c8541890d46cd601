#!/bin/sh
# Writes a new API key to secrets/api-keys (beside this script), readable by the server
# container's user (UID 10001) and by your group, by no one else. Run it again to rotate the key.
set -eu
cd "$(dirname "$0")"
umask 077
mkdir -p secrets
chmod 0700 secrets
printf 'lsk-%s\n' "$(openssl rand -hex 32)" > secrets/api-keys.new
chmod 0640 secrets/api-keys.new
if [ "$(id -u)" -eq 0 ]; then
  chown 10001 secrets/api-keys.new
else
  sudo chown 10001 secrets/api-keys.new
fi
mv secrets/api-keys.new secrets/api-keys
echo "wrote secrets/api-keys (owner UID 10001, mode 0640)"
