#!/usr/bin/env bash
# A one-node Slurm cluster on this machine, for the tests marked `slurm` (pytest -m slurm).
# Cluster users don't need it: their site already runs Slurm.
#
#   sudo scripts/local_slurm.sh start    # install what is missing, configure, start, wait
#   sudo scripts/local_slurm.sh status   # daemons, sinfo, sacct
#   sudo scripts/local_slurm.sh stop     # stop the daemons (state and config are kept)
#
# Debian's packages: slurm-wlm (slurmctld, slurmd), slurmdbd, munge, mariadb-server. The
# daemons are started directly (no systemd needed) and everything they keep (config, munge
# key, database, spool, logs, pid files) lives under $BENCH_SLURM_DIR. The client commands
# (sbatch, sacct, ...) look for /etc/slurm/slurm.conf, so that path is a symlink to the
# config here; the script refuses to replace a slurm.conf it did not write (a real cluster's).
# `start` is idempotent: what is running is left alone, so a second call only checks.
set -euo pipefail

STATE=${BENCH_SLURM_DIR:-/var/lib/bench-slurm}
CLUSTER=${BENCH_SLURM_CLUSTER:-bench}
PARTITION=${BENCH_SLURM_PARTITION:-local}
DB_PORT=${BENCH_SLURM_DB_PORT:-3306}
WAIT_S=${BENCH_SLURM_WAIT_S:-120}
PACKAGES=(slurm-wlm slurmdbd munge mariadb-server mariadb-client)
MARK="# written by bench scripts/local_slurm.sh"

ETC=$STATE/etc
RUN=$STATE/run
LOG=$STATE/log
# munge's default socket: Slurm's client commands reach munged there whatever AuthInfo says
MUNGE_RUN=/run/munge
MUNGE_SOCKET=$MUNGE_RUN/munge.socket.2
DB_SOCKET=$RUN/mysql/mysqld.sock
T0=$EPOCHREALTIME

log() { awk -v a="$T0" -v b="$EPOCHREALTIME" -v m="$*" 'BEGIN { printf "[local_slurm %6.1fs] %s\n", b - a, m }'; }
die() { log "ERROR: $*"; exit 1; }

alive() {  # alive PIDFILE: the pid in it is a running daemon of that name (after a reboot
  # or a killed session the file is stale, and its pid may belong to another process now)
  local pid name
  [ -s "$1" ] || return 1
  pid=$(cat "$1")
  name=$(basename "$1" .pid)
  [ "$name" = mysqld ] && name=mariadbd
  [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$name" ] &&
    # a killed daemon stays a zombie until PID 1 reaps it
    [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != Z ]
}

wait_for() {  # wait_for SECONDS WHAT CMD...: poll CMD (each try cut at 10 s) until it succeeds
  local limit=$1 what=$2 deadline
  shift 2
  deadline=$((SECONDS + limit))
  while ((SECONDS < deadline)); do
    if declare -F "$1" >/dev/null; then "$@" >/dev/null 2>&1 && return 0
    elif timeout 10 "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.5
  done
  die "$what: not ready after ${limit}s (logs in $LOG)"
}

need_root() { [ "$(id -u)" = 0 ] || die "run as root (sudo $0 $*)"; }

install_packages() {
  local missing=() p
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
  done
  if [ ${#missing[@]} -eq 0 ]; then
    log "packages present: ${PACKAGES[*]}"
    return
  fi
  log "installing ${missing[*]} (apt-get)"
  # Package scripts would start the daemons with Debian's default config (and fail or race
  # with ours without systemd); policy-rc.d tells invoke-rc.d not to, for this install only.
  local policy=/usr/sbin/policy-rc.d own_policy=0
  if [ ! -e $policy ]; then
    printf '#!/bin/sh\nexit 101\n' >$policy && chmod 755 $policy && own_policy=1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >"$STATE/apt.log" 2>&1 ||
    { tail -20 "$STATE/apt.log"; [ $own_policy = 1 ] && rm -f $policy; die "apt-get install failed"; }
  [ $own_policy = 1 ] && rm -f $policy
  log "installed"
}

write_if_changed() {  # write_if_changed PATH MODE: stdin -> PATH, returns 0 if it changed
  local tmp
  tmp=$(mktemp "$1.XXXX")
  cat >"$tmp"
  chmod "$2" "$tmp"
  if [ -f "$1" ] && cmp -s "$tmp" "$1"; then
    rm -f "$tmp"
    return 1
  fi
  mv "$tmp" "$1"
  return 0
}

link_etc() {  # link_etc NAME: /etc/slurm/NAME -> $ETC/NAME, never over a foreign file
  local dst=/etc/slurm/$1
  mkdir -p /etc/slurm
  if [ -e "$dst" ] && [ ! -L "$dst" ] && ! grep -qF "$MARK" "$dst"; then
    die "$dst exists and was not written by this script (a real cluster's?); not touching it"
  fi
  ln -sfn "$ETC/$1" "$dst"
}

configure() {
  mkdir -p "$ETC" "$RUN" "$LOG" "$STATE/ctld" "$STATE/slurmd" "$STATE/munge"
  chmod 755 "$STATE" "$RUN"
  local host cpus mem_mb real_mb changed=0
  host=$(hostname -s)
  cpus=$(nproc)
  mem_mb=$(awk '/MemTotal/ {print int($2 / 1024)}' /proc/meminfo)
  # slurmd drains a node whose configured memory exceeds what it finds: leave some margin
  real_mb=$((mem_mb * 9 / 10))
  # a job without --mem gets its share per core instead of the whole node (which would
  # serialise 1-core jobs)
  local per_cpu=$((real_mb / cpus))
  write_if_changed "$ETC/slurm.conf" 644 <<EOF && changed=1
$MARK
ClusterName=$CLUSTER
SlurmctldHost=$host
AuthType=auth/munge
# a requeued job waits cred_expire + 1 s before it may start again (default 120 s); with the
# scheduler's passes every 5 s instead of 60, a job requeued at its time limit restarts in
# about 20 s
AuthInfo=cred_expire=15
CredType=cred/munge
# a throwaway test cluster: the daemons and the jobs' owner are root
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/slurmd
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# no cgroups nor systemd here: processes are tracked through their parent ids
ProctrackType=proctrack/linuxproc
TaskPlugin=task/affinity
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=10
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=5,bf_interval=5
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
MpiDefault=none
ReturnToService=2
# finished jobs leave slurmctld's memory soon (sacct answers from the database)
MinJobAge=30
# a job is killed right at its time limit, KillWait seconds after SIGTERM: the tests of
# time-limit requeueing stay short
OverTimeLimit=0
KillWait=5
JobRequeue=1
NodeName=$host CPUs=$cpus RealMemory=$real_mb State=UNKNOWN
PartitionName=$PARTITION Nodes=$host Default=YES MaxTime=INFINITE DefMemPerCPU=$per_cpu State=UP
EOF
  if [ ! -s "$ETC/dbpass" ]; then
    (umask 077 && head -c 18 /dev/urandom | base64 | tr -d '/+=' >"$ETC/dbpass")
  fi
  write_if_changed "$ETC/slurmdbd.conf" 600 <<EOF && changed=1
$MARK
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
LogFile=$LOG/slurmdbd.log
PidFile=$RUN/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=$(cat "$ETC/dbpass")
StorageLoc=slurm_acct_db
EOF
  link_etc slurm.conf
  link_etc slurmdbd.conf
  if [ $changed = 1 ]; then log "config written to $ETC ($cpus cores, RealMemory=${real_mb}MB)"
  else log "config unchanged ($ETC)"; fi
  CONFIG_CHANGED=$changed
}

start_munge() {
  if alive "$MUNGE_RUN/munged.pid"; then log "munged running"; return; fi
  if [ ! -s "$STATE/munge/munge.key" ]; then
    head -c 1024 /dev/urandom >"$STATE/munge/munge.key"
    log "munge key created"
  fi
  mkdir -p "$MUNGE_RUN"
  chown -R munge:munge "$STATE/munge" "$MUNGE_RUN"
  chmod 700 "$STATE/munge" && chmod 400 "$STATE/munge/munge.key" && chmod 755 "$MUNGE_RUN"
  touch "$LOG/munged.log" && chown munge:munge "$LOG/munged.log"
  runuser -u munge -- munged --socket="$MUNGE_SOCKET" --key-file="$STATE/munge/munge.key" \
    --pid-file="$MUNGE_RUN/munged.pid" --seed-file="$STATE/munge/munged.seed" \
    --log-file="$LOG/munged.log"
  wait_for 20 munged munge --socket="$MUNGE_SOCKET" -n
  log "munged started"
}

sql() { timeout 20 mariadb --no-defaults --socket="$DB_SOCKET" -uroot -N -e "$1"; }

mariadb_ready() {  # the server answers; fail at once if it died (its log says why)
  kill -0 "$DB_PID" 2>/dev/null || { tail -5 "$LOG/mariadb.log"; die "mariadbd exited"; }
  sql "SELECT 1"
}

start_mariadb() {
  if alive "$RUN/mysql/mysqld.pid"; then log "mariadb running"; return; fi
  if [ ! -d "$STATE/mysql/mysql" ]; then
    mkdir -p "$STATE/mysql" && chown mysql:mysql "$STATE/mysql"
    mariadb-install-db --no-defaults --user=mysql --datadir="$STATE/mysql" \
      --auth-root-authentication-method=socket --skip-test-db >"$LOG/mariadb-install.log" 2>&1 ||
      { tail -20 "$LOG/mariadb-install.log"; die "mariadb-install-db failed"; }
    log "database initialised in $STATE/mysql"
  fi
  # the server runs as mysql: its socket and pid file go to a folder it owns
  mkdir -p "$RUN/mysql" && chown mysql:mysql "$RUN/mysql"
  touch "$LOG/mariadb.log" && chown mysql:mysql "$LOG/mariadb.log"
  # small buffers: this database holds a few hundred test jobs at most
  setsid mariadbd --no-defaults --user=mysql --datadir="$STATE/mysql" --socket="$DB_SOCKET" \
    --pid-file="$RUN/mysql/mysqld.pid" --port="$DB_PORT" --bind-address=127.0.0.1 \
    --log-error="$LOG/mariadb.log" --innodb-buffer-pool-size=64M \
    --innodb-lock-wait-timeout=900 --skip-name-resolve </dev/null >/dev/null 2>&1 &
  DB_PID=$!
  wait_for 60 mariadb mariadb_ready
  sql "CREATE DATABASE IF NOT EXISTS slurm_acct_db;
       CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$(cat "$ETC/dbpass")';
       ALTER USER 'slurm'@'127.0.0.1' IDENTIFIED BY '$(cat "$ETC/dbpass")';
       GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';"
  log "mariadb started (port $DB_PORT, socket $DB_SOCKET)"
}

start_slurmdbd() {
  if alive "$RUN/slurmdbd.pid"; then log "slurmdbd running"; return; fi
  slurmdbd
  wait_for 60 slurmdbd sacctmgr -n list cluster
  log "slurmdbd started"
}

register() {
  # slurmctld registers with slurmdbd under its ClusterName; the account and user make the
  # jobs' usage show up in sacct/sreport like on a site cluster
  if ! sacctmgr -n -P list cluster format=cluster | grep -qx "$CLUSTER"; then
    sacctmgr -i add cluster "$CLUSTER" >/dev/null
    log "cluster $CLUSTER added to slurmdbd"
  fi
  if ! sacctmgr -n -P list account format=account | grep -qx bench; then
    sacctmgr -i add account bench cluster="$CLUSTER" description=bench organization=bench >/dev/null
    log "account bench added"
  fi
  if [ -z "$(sacctmgr -n -P list assoc user=root account=bench format=account)" ]; then
    sacctmgr -i add user root account=bench cluster="$CLUSTER" >/dev/null
    log "user root added to account bench"
  fi
}

start_slurmctld() {
  if alive "$RUN/slurmctld.pid" && [ "${CONFIG_CHANGED:-0}" = 1 ]; then
    # some settings (AuthInfo, SchedulerParameters) are read at start only; running jobs
    # survive the restart (their steps belong to slurmstepd)
    stop_pid slurmctld "$RUN/slurmctld.pid"
    stop_pid slurmd "$RUN/slurmd.pid"
  fi
  if alive "$RUN/slurmctld.pid"; then log "slurmctld running"; return; fi
  slurmctld
  wait_for 60 slurmctld scontrol ping
  log "slurmctld started"
}

start_slurmd() {
  if alive "$RUN/slurmd.pid"; then log "slurmd running"; return; fi
  SLURMD_SINCE=$(date +%s)
  slurmd
  log "slurmd started"
}

slurmd_registered() {  # the controller has heard from the slurmd started at SLURMD_SINCE
  local t
  t=$(timeout 10 scontrol show node "$(hostname -s)" -o | grep -o 'SlurmdStartTime=[^ ]*')
  t=${t#SlurmdStartTime=}
  [ -n "$t" ] && [ "$t" != None ] && (($(date -d "$t" +%s) >= ${SLURMD_SINCE:-0} - 1))
}

node_usable() { timeout 10 sinfo -h -p "$PARTITION" -o '%t' | grep -Eq '^(idle|mix|alloc)'; }

cmd_start() {
  need_root start
  mkdir -p "$STATE"
  install_packages
  configure
  start_munge
  start_mariadb
  start_slurmdbd
  register
  start_slurmctld
  start_slurmd
  # a node the controller marked down earlier (a stopped slurmd) comes back on its own with
  # ReturnToService=2; jobs already running make it mix/alloc, which is fine for a re-run
  wait_for "$WAIT_S" "slurmd registration" slurmd_registered
  wait_for "$WAIT_S" "node in partition $PARTITION" node_usable
  wait_for 30 sacct sacct -n -X -S now-1minutes
  log "cluster ready: $(sinfo -h -p "$PARTITION" -o '%P %D node(s) %t, %c cpus, %m MB')"
}

stop_pid() {  # stop_pid NAME PIDFILE: TERM, then KILL after a bounded wait
  local pid i
  alive "$2" || return 0
  pid=$(cat "$2")
  kill "$pid"
  for ((i = 0; i < 60; i++)); do alive "$2" || break; sleep 0.5; done
  if alive "$2"; then kill -9 "$pid"; log "$1 killed (no exit after TERM)"; fi
  rm -f "$2"
  log "$1 stopped"
}

cmd_stop() {
  need_root stop
  stop_pid slurmd "$RUN/slurmd.pid"
  stop_pid slurmctld "$RUN/slurmctld.pid"
  stop_pid slurmdbd "$RUN/slurmdbd.pid"
  stop_pid mariadb "$RUN/mysql/mysqld.pid"
  stop_pid munged "$MUNGE_RUN/munged.pid"
}

cmd_status() {
  local name file rc=0
  for name in munged:$MUNGE_RUN/munged.pid mariadb:$RUN/mysql/mysqld.pid \
    slurmdbd:$RUN/slurmdbd.pid slurmctld:$RUN/slurmctld.pid slurmd:$RUN/slurmd.pid; do
    file=${name#*:}
    if alive "$file"; then echo "${name%%:*}: running (pid $(cat "$file"))"
    else echo "${name%%:*}: not running"; rc=1; fi
  done
  if command -v sinfo >/dev/null; then
    sinfo 2>&1 || rc=1
    sacct -X -S now-1hours -o JobID,JobName%20,State,Elapsed,ExitCode 2>&1 | tail -15 || rc=1
  fi
  return $rc
}

case "${1:-}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  restart) cmd_stop && cmd_start ;;
  *) echo "usage: $0 start|stop|status|restart   (state in $STATE)" >&2; exit 2 ;;
esac
