#!/usr/bin/env bash
# Installs everything satpulse needs on a fresh Debian 12 machine: Debian packages (ClickHouse server,
# Prometheus, Alertmanager, docker-compose, Java, Maven, Dovecot for the IMAP tests, Node.js and npm, Chromium and
# its driver for the dashboard page's browser test, ZooKeeper for the replicated ClickHouse of the cluster tests:
# only its jars, `zookeeper` starts no service), the Kafka jars (Maven), the dashboard's browser libraries
# (npm ci) and a Python venv.
# Idempotent: skips what is already there. Needs root (or sudo) only for the Debian packages.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(clickhouse-server clickhouse-client prometheus prometheus-alertmanager docker-compose
          openjdk-17-jre-headless maven python3-venv dovecot-imapd nodejs npm chromium chromium-driver
          fonts-dejavu-core zookeeper)
missing=()
for pkg in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
# the machine may have Java/Maven from elsewhere: accept those
command -v java >/dev/null && missing=("${missing[@]/openjdk-17-jre-headless}")
command -v mvn >/dev/null && missing=("${missing[@]/maven}")
command -v npm >/dev/null && missing=("${missing[@]/nodejs}") && missing=("${missing[@]/npm}")
python3 -c "import venv, ensurepip" 2>/dev/null && missing=("${missing[@]/python3-venv}")
read -r -a missing <<< "${missing[*]:-}"
if ((${#missing[@]})); then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "bootstrap: installing Debian packages: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# the Debian package starts its own server on the default ports; satpulse runs its own on loopback
if command -v systemctl >/dev/null && systemctl is-active --quiet clickhouse-server 2>/dev/null; then
  systemctl stop clickhouse-server || true
fi
# likewise Dovecot (IMAP on 143/993): the IMAP tests start their own, unprivileged, on a free loopback port
if command -v systemctl >/dev/null && systemctl is-active --quiet dovecot 2>/dev/null; then
  systemctl stop dovecot || true
fi

if [ ! -d services/kafka/target/lib ]; then
  echo "bootstrap: fetching Kafka jars with Maven"
  (cd services/kafka && mvn -q -B dependency:copy-dependencies -DoutputDirectory=target/lib)
fi

# uPlot for the dashboard page (dashboard/package-lock.json); again only when the lockfile changed
lock_sum=$(sha256sum dashboard/package-lock.json | cut -d' ' -f1)
if [ "$(cat dashboard/node_modules/.installed 2>/dev/null)" != "$lock_sum" ]; then
  echo "bootstrap: installing the dashboard's browser libraries (npm ci)"
  (cd dashboard && npm ci --no-audit --no-fund --loglevel=error)
  echo "$lock_sum" > dashboard/node_modules/.installed
fi

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
if [ ! -f .venv/.installed ] || [ pyproject.toml -nt .venv/.installed ]; then
  echo "bootstrap: installing Python packages into .venv"
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -e '.[test]'
  touch .venv/.installed
fi
echo "bootstrap: ready"
