#!/usr/bin/env bash
# Starts and stops the real servers the integration tests use, on loopback only:
#   scripts/services.sh start   PostgreSQL (initdb into a temporary folder) and a single-node
#                               Slurm (munged, slurmctld, slurmd) when their packages are installed
#   scripts/services.sh stop    stops what start started
# `start` prints the environment the tests read (TOPIARY_TEST_POSTGRES, TOPIARY_TEST_SLURM) and
# writes it to $TOPIARY_SERVICES/env; scripts/test.sh sources it. Run as root (Slurm's daemons
# need it; PostgreSQL then runs as the `postgres` user, since it refuses root).
set -euo pipefail
base="${TOPIARY_SERVICES:-/tmp/topiary-services}"
pg_port="${TOPIARY_PG_PORT:-55432}"
slurm_port="${TOPIARY_SLURM_PORT:-56817}"

as_postgres() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

start_postgres() {
  local bin
  bin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)"
  if [ -z "$bin" ] || [ ! -x "$bin/initdb" ]; then echo "services: PostgreSQL is not installed (scripts/setup.sh --cluster)" >&2; return 0; fi
  local dir="$base/postgres"
  rm -rf "$dir" && mkdir -p "$dir"
  [ "$(id -u)" = 0 ] && chown postgres "$dir"
  as_postgres "$bin/initdb" -D "$dir/data" -A trust -U topiary --no-sync >"$base/postgres-initdb.log" 2>&1
  # TLS with a self-signed certificate (sslmode=require does not verify it; sslmode=disable, the
  # default, still connects), and a role that may only connect over TLS: the TLS test's.
  as_postgres openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=127.0.0.1 \
    -keyout "$dir/data/server.key" -out "$dir/data/server.crt" >"$base/postgres-tls.log" 2>&1
  as_postgres chmod 600 "$dir/data/server.key"
  as_postgres sh -c "{ echo 'hostnossl all tlsonly 127.0.0.1/32 reject'; cat '$dir/data/pg_hba.conf'; } >'$dir/hba' && mv '$dir/hba' '$dir/data/pg_hba.conf'"
  as_postgres "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -p $pg_port -k $dir -c fsync=off -c synchronous_commit=off -c max_connections=300 -c ssl=on" start >/dev/null
  "$bin/createdb" -h 127.0.0.1 -p "$pg_port" -U topiary topiary
  "$bin/psql" -X -q -h 127.0.0.1 -p "$pg_port" -U topiary -d topiary -c "CREATE ROLE tlsonly LOGIN CREATEDB"
  echo "export TOPIARY_TEST_POSTGRES=postgresql://topiary@127.0.0.1:$pg_port/topiary" >>"$base/env"
  echo "services: PostgreSQL $("$bin/postgres" --version | awk '{print $3}') on 127.0.0.1:$pg_port (data in $dir)"
  # A second server that one test stops and starts again (an outage while results are recorded),
  # through the script this writes, without disturbing the tests that share the first.
  local outage="$base/postgres-outage" outage_port=$((pg_port + 2))
  rm -rf "$outage" && mkdir -p "$outage"
  [ "$(id -u)" = 0 ] && chown postgres "$outage"
  as_postgres "$bin/initdb" -D "$outage/data" -A trust -U topiary --no-sync >"$base/postgres-outage-initdb.log" 2>&1
  cat >"$base/postgres-outage.sh" <<CTL
#!/usr/bin/env bash
# postgres-outage.sh start|stop: the outage test's own PostgreSQL on 127.0.0.1:$outage_port.
set -euo pipefail
as_postgres() { if [ "\$(id -u)" = 0 ]; then runuser -u postgres -- "\$@"; else "\$@"; fi; }
# The server must not keep what the caller gave this script (a pipe, or the descriptor by which
# Foundation's Process learns that the script ended): everything above 2 is closed.
for fd in /proc/\$\$/fd/*; do fd=\${fd##*/}; if [ "\$fd" -gt 2 ]; then eval "exec \$fd>&-" 2>/dev/null || true; fi; done
case "\$1" in
  start) as_postgres "$bin/pg_ctl" -D "$outage/data" -l "$outage/server.log" -w -t 60 \\
           -o "-c listen_addresses=127.0.0.1 -p $outage_port -k $outage -c fsync=off -c synchronous_commit=off" start </dev/null >/dev/null 2>&1 ;;
  stop) as_postgres "$bin/pg_ctl" -D "$outage/data" -m fast -w stop </dev/null >/dev/null 2>&1 ;;
esac
CTL
  chmod 755 "$base/postgres-outage.sh"
  # One role there must give a password (the rest are trusted): the test of the message a
  # password-less URL then gets.
  as_postgres sh -c "{ echo 'host all secretive 127.0.0.1/32 scram-sha-256'; cat '$outage/data/pg_hba.conf'; } >'$outage/hba' && mv '$outage/hba' '$outage/data/pg_hba.conf'"
  "$base/postgres-outage.sh" start
  "$bin/createdb" -h 127.0.0.1 -p "$outage_port" -U topiary topiary
  "$bin/psql" -X -q -h 127.0.0.1 -p "$outage_port" -U topiary -d topiary -c "CREATE ROLE secretive LOGIN PASSWORD 'S3cr3t'"
  echo "export TOPIARY_TEST_POSTGRES_OUTAGE=postgresql://topiary@127.0.0.1:$outage_port/topiary" >>"$base/env"
  echo "export TOPIARY_TEST_POSTGRES_OUTAGE_CTL=$base/postgres-outage.sh" >>"$base/env"
  echo "services: a second PostgreSQL for the outage test on 127.0.0.1:$outage_port ($base/postgres-outage.sh start|stop)"
}

stop_postgres() {
  local bin dir="$base/postgres"
  bin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)"
  if [ -n "$bin" ] && [ -f "$dir/data/postmaster.pid" ]; then as_postgres "$bin/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true; fi
  local outage="$base/postgres-outage"
  if [ -n "$bin" ] && [ -f "$outage/data/postmaster.pid" ]; then as_postgres "$bin/pg_ctl" -D "$outage/data" -m immediate stop >/dev/null 2>&1 || true; fi
}

start_slurm() {
  if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then echo "services: Slurm is not installed (scripts/setup.sh --cluster)" >&2; return 0; fi
  if [ "$(id -u)" != 0 ]; then echo "services: Slurm's daemons need root; not started" >&2; return 0; fi
  local dir="$base/slurm" host
  host="$(hostname -s)"
  rm -rf "$dir" && mkdir -p "$dir/state" "$dir/spool" "$dir/munge"
  # munge: its own key and socket in the temporary folder.
  dd if=/dev/urandom of="$dir/munge/munge.key" bs=1024 count=1 status=none
  chown -R munge:munge "$dir/munge" 2>/dev/null || true
  chmod 700 "$dir/munge"; chmod 400 "$dir/munge/munge.key"
  runuser -u munge -- munged --key-file="$dir/munge/munge.key" --socket="$dir/munge/munge.socket" \
    --pid-file="$dir/munge/munged.pid" --log-file="$dir/munge/munged.log" --seed-file="$dir/munge/seed" --force
  cat >"$dir/slurm.conf" <<CONF
ClusterName=topiary-test
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$slurm_port
SlurmdPort=$((slurm_port + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$dir/munge/munge.socket
CredType=cred/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
MpiDefault=none
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
SlurmdParameters=config_overrides
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MailProg=/bin/true
NodeName=$host NodeAddr=127.0.0.1 CPUs=8 RealMemory=4000 State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
CONF
  export SLURM_CONF="$dir/slurm.conf"
  slurmctld -f "$dir/slurm.conf"
  slurmd -f "$dir/slurm.conf"
  for _ in $(seq 60); do
    if sinfo -h -o %T 2>/dev/null | grep -qE '^(idle|mixed|allocated)'; then break; fi
    sleep 1
  done
  if ! sinfo -h -o %T | grep -qE '^(idle|mixed|allocated)'; then
    echo "services: Slurm's node did not come up:" >&2; sinfo >&2 || true; tail -20 "$dir/slurmctld.log" "$dir/slurmd.log" >&2 || true; return 1
  fi
  echo "export SLURM_CONF=$dir/slurm.conf" >>"$base/env"
  echo "export TOPIARY_TEST_SLURM=1" >>"$base/env"
  echo "services: Slurm $(sinfo --version | awk '{print $2}') with node $host (8 CPUs declared), partition debug (config $dir/slurm.conf)"
}

stop_slurm() {
  local dir="$base/slurm"
  for f in "$dir/slurmd.pid" "$dir/slurmctld.pid" "$dir/munge/munged.pid"; do
    if [ -f "$f" ]; then kill "$(cat "$f")" 2>/dev/null || true; fi
  done
}

case "${1:-}" in
  start)
    mkdir -p "$base"; : >"$base/env"
    start_postgres
    start_slurm
    cat "$base/env"
    ;;
  stop)
    stop_slurm
    stop_postgres
    ;;
  *) echo "usage: scripts/services.sh start|stop" >&2; exit 2 ;;
esac
