#!/usr/bin/env bash
# Install (Debian packages, only those missing) and start a real single-node SLURM cluster with
# accounting on this host, without systemd: munged, MariaDB, slurmdbd, slurmctld, slurmd.
#
# Usage: slurm/start-local-slurm.sh DIR
#   DIR  holds everything: config, munge key and socket, state, spool, logs, pid files, MariaDB data.
#        Nothing is written to /etc/slurm, /etc/munge or /var/lib/mysql.
#
# stdout carries only `export ...` lines (also written to DIR/env.sh); diagnostics go to stderr:
#   eval "$(bash slurm/start-local-slurm.sh /tmp/genmed-slurm)"
#   sbatch --wrap hostname; squeue; sacct
#   bash slurm/stop-local-slurm.sh /tmp/genmed-slurm [--purge]
#
# Idempotent (daemons already running per their pid files are left alone; a second call is a no-op
# that prints the exports again) and non-interactive (works with CI=true and no stdin). Concurrent
# calls on the same DIR are serialised with a lock. Needs root: apt-get, and slurmd runs as root.
#
# Knobs (environment, all optional):
#   LOCAL_SLURM_FAKE_GPUS=N     declare N fake GPUs (Gres=gpu:N, /dev/null twins as devices): jobs get
#                               CUDA_VISIBLE_DEVICES but no real GPU. Default 0.
#   LOCAL_SLURM_ACCOUNTING=1|0  slurmdbd + MariaDB so that sacct works. submitit reads job states with
#                               sacct: without it a cancelled job never becomes done. Default 1.
#   LOCAL_SLURM_PORT_BASE=P     slurmctld P, slurmd P+1, slurmdbd P+2, MariaDB P+3. Default 16817
#                               (a system Slurm would use 6817-6819).
#   LOCAL_SLURM_CRED_EXPIRE=S   credential lifetime, also the wait before a requeued job may start
#                               again (Slurm's minimum is 5). Default 10 (Slurm's default 120).
#   LOCAL_SLURM_WAIT_S=S        how long to wait for the node to become idle. Default 90.
#   LOCAL_SLURM_NO_INSTALL=1    never call apt-get; fail if a package is missing.
set -euo pipefail

T0=$(date +%s.%N)
log() { printf '[local-slurm] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

if [ $# -lt 1 ] || [ -z "$1" ]; then die "usage: $0 DIR"; fi
DIR=$1
case "$DIR" in /*) ;; *) DIR="$(pwd)/$DIR" ;; esac
ACCOUNTING=${LOCAL_SLURM_ACCOUNTING:-1}
FAKE_GPUS=${LOCAL_SLURM_FAKE_GPUS:-0}
PORT_BASE=${LOCAL_SLURM_PORT_BASE:-16817}
CRED_EXPIRE=${LOCAL_SLURM_CRED_EXPIRE:-10}
WAIT_S=${LOCAL_SLURM_WAIT_S:-90}
NO_INSTALL=${LOCAL_SLURM_NO_INSTALL:-0}

isint() { case "$1" in '' | *[!0-9]*) return 1 ;; esac; }
for v in FAKE_GPUS PORT_BASE CRED_EXPIRE WAIT_S; do
  isint "${!v}" || die "LOCAL_SLURM_$v must be a non-negative integer (got '${!v}')"
done
case "$ACCOUNTING" in 0 | 1) ;; *) die "LOCAL_SLURM_ACCOUNTING must be 0 or 1" ;; esac
[ "$CRED_EXPIRE" -ge 5 ] || die "LOCAL_SLURM_CRED_EXPIRE must be >= 5 (Slurm's minimum)"
[ "$(id -u)" = 0 ] || die "must run as root (it installs Debian packages and slurmd runs as root)"

CTLD_PORT=$PORT_BASE
SLURMD_PORT=$((PORT_BASE + 1))
DBD_PORT=$((PORT_BASE + 2))
DB_PORT=$((PORT_BASE + 3))

mkdir -p "$DIR"
chmod 755 "$DIR"
# One start/stop at a time per DIR (a CI script and a pytest fixture may race). The daemons are
# started with fd 9 closed (`9>&-`): one that inherited it would hold the lock for its lifetime.
exec 9>"$DIR/.lock"
flock -w 120 9 || die "another start/stop holds $DIR/.lock for 120 s"

# ------------------------------------------------------------------------------------ install
pkgs=(munge slurmctld slurmd slurm-client)
[ "$ACCOUNTING" = 1 ] && pkgs+=(slurmdbd mariadb-server)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  [ "$NO_INSTALL" = 1 ] && die "missing Debian packages: ${missing[*]} (LOCAL_SLURM_NO_INSTALL=1)"
  command -v apt-get >/dev/null || die "missing packages ${missing[*]} and no apt-get (Debian/Ubuntu only)"
  log "installing: ${missing[*]}"
  # Keep the packages' maintainer scripts from starting system-wide daemons (munge, mariadb,
  # slurm*) through their init scripts: a policy-rc.d exiting 101 means "deny".
  made_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    made_policy=1
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt_opts=(-y -q -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
  APT_LOG=$DIR/apt.log
  : > "$APT_LOG"
  install() { apt-get install "${apt_opts[@]}" --no-install-recommends "${missing[@]}" >>"$APT_LOG" 2>&1; }
  rc=0
  # A fresh image has no package lists: update first. Otherwise try the cached lists and update
  # only if the install fails (stale lists), so a warm machine never pays for an update.
  if ! compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null; then
    apt-get update -q >>"$APT_LOG" 2>&1 || rc=$?
  fi
  if [ "$rc" = 0 ]; then
    install || { apt-get update -q >>"$APT_LOG" 2>&1 && install; } || rc=$?
  fi
  if [ "$made_policy" = 1 ]; then rm -f /usr/sbin/policy-rc.d; trap - EXIT; fi
  [ "$rc" = 0 ] || { tail -n 30 "$APT_LOG" >&2; die "apt-get install ${missing[*]} failed (log: $APT_LOG)"; }
  log "installed in $(awk -v a="$T0" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}') s"
fi
for c in munged slurmctld slurmd sbatch sinfo; do
  command -v "$c" >/dev/null || die "$c not found after install"
done

# ------------------------------------------------------------------------------------ helpers
is_zombie() { [ "$(sed -n 's/.*) \(.\).*/\1/p' "/proc/$1/stat" 2>/dev/null)" = Z ]; }
# alive NAME PIDFILE: PIDFILE names a live (non-zombie) process whose command is NAME.
alive() {
  local name=$1 pidfile=$2 pid
  [ -s "$pidfile" ] || return 1
  pid=$(tr -dc '0-9' < "$pidfile")
  [ -n "$pid" ] && [ -r "/proc/$pid/comm" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$name" ] &&
    ! is_zombie "$pid"
}
# wait_for SECONDS CMD...: retry CMD every 0.25 s until it succeeds.
wait_for() {
  local end=$((SECONDS + $1)); shift
  until "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$end" ] || return 1
    sleep 0.25
  done
}
# wait_up NAME PIDFILE SECONDS CMD...: like wait_for, but give up at once if daemon NAME died.
wait_up() {
  local name=$1 pidfile=$2 end=$((SECONDS + $3)); shift 3
  until "$@" >/dev/null 2>&1; do
    alive "$name" "$pidfile" || { log "$name died"; return 1; }
    [ "$SECONDS" -lt "$end" ] || return 1
    sleep 0.25
  done
}
# port_free PORT: nothing listens on 127.0.0.1:PORT.
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
# need_port NAME PORT: fail clearly when another program holds the port we are about to use.
need_port() {
  port_free "$2" || die "port $2 (for $1) is already in use by another program; pick other ports with LOCAL_SLURM_PORT_BASE"
}
# fail_with LOG MESSAGE: show the end of LOG and die.
fail_with() { tail -n 20 "$1" >&2 2>/dev/null || true; die "$2 (log: $1)"; }

# ------------------------------------------------------------------------------------ layout
mkdir -p "$DIR"/{etc,run,log,state,spool,munge,var,dev}
chmod 755 "$DIR/munge"              # munged: socket dir must be reachable by all
chmod 700 "$DIR/var" "$DIR/state"
CONF=$DIR/etc/slurm.conf
export SLURM_CONF=$CONF
MSOCK=$DIR/munge/munge.socket.2

HOST=$(hostname -s)
NCPU=$(nproc)
MEM_MB=$(awk '/^MemTotal:/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)
CLUSTER=genmed

# Node topology from `slurmd -C` when it agrees with nproc (no "Node reconfigured socket/core
# boundaries" warning), else just CPUs (e.g. a container limited to fewer CPUs than the host).
NODE_HW="CPUs=$NCPU"
hw=$(slurmd -C 2>/dev/null | grep -m1 '^NodeName=' || true)
if [ -n "$hw" ] && printf '%s\n' "$hw" | grep -q " CPUs=$NCPU "; then
  NODE_HW=$(printf '%s\n' "$hw" | tr ' ' '\n' |
    grep -E '^(CPUs|Boards|SocketsPerBoard|CoresPerSocket|ThreadsPerCore)=' | tr '\n' ' ')
fi

GRES_TYPES=""
GRES_NODE=""
if [ "$FAKE_GPUS" -gt 0 ]; then
  GRES_TYPES="GresTypes=gpu"
  # recording GPU TRES needs slurmdbd (slurmctld refuses to start otherwise)
  [ "$ACCOUNTING" = 1 ] && GRES_TYPES+=$'\nAccountingStorageTRES=gres/gpu'
  GRES_NODE="Gres=gpu:$FAKE_GPUS"
  # gres/gpu wants character devices: a /dev/null twin (c 1 3) per fake GPU.
  for i in $(seq 0 $((FAKE_GPUS - 1))); do
    f=$DIR/dev/nvidia$i
    [ -c "$f" ] || { rm -f "$f"; mknod -m 666 "$f" c 1 3 2>/dev/null || : > "$f"; }
  done
fi

any_running() {
  local d
  for d in munged slurmctld slurmd slurmdbd mariadbd; do
    alive "$d" "$DIR/run/$d.pid" && return 0
  done
  return 1
}
# put_file DEST MODE < content: install unless identical; refuse to change a running cluster's config.
put_file() {
  local dest=$1 mode=$2 tmp
  tmp=$(mktemp "$dest.XXXXXX")
  cat > "$tmp"
  chmod "$mode" "$tmp"
  if [ -f "$dest" ] && cmp -s "$tmp" "$dest"; then
    rm -f "$tmp"
  elif [ -f "$dest" ] && any_running; then
    rm -f "$tmp"
    die "$dest would change (different knobs or host?) but the cluster is running: run slurm/stop-local-slurm.sh $DIR first"
  else
    mv -f "$tmp" "$dest"
  fi
}

# ------------------------------------------------------------------------------------ config
if [ "$ACCOUNTING" = 1 ]; then
  # AccountingStoragePass names the munge socket for the slurmctld -> slurmdbd connection
  # (without it slurmctld/sacctmgr try /run/munge/munge.socket.2).
  ACCT_LINES="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$DBD_PORT
AccountingStoragePass=$MSOCK"
else
  ACCT_LINES="AccountingStorageType=accounting_storage/none"
fi

put_file "$CONF" 644 <<EOF
# Single-node cluster written by slurm/start-local-slurm.sh (do not edit: it is regenerated)
ClusterName=$CLUSTER
SlurmctldHost=$HOST(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$MSOCK,cred_expire=$CRED_EXPIRE
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
MpiDefault=none
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
$ACCT_LINES
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=5,bf_interval=2
DependencyParameters=kill_invalid_depend
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
SlurmctldTimeout=60
SlurmdTimeout=300
InactiveLimit=0
MinJobAge=300
KillWait=5
Waittime=0
$GRES_TYPES
NodeName=$HOST NodeAddr=127.0.0.1 $NODE_HW RealMemory=$MEM_MB $GRES_NODE State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF

if [ "$FAKE_GPUS" -gt 0 ]; then
  put_file "$DIR/etc/gres.conf" 644 <<EOF
AutoDetect=off
NodeName=$HOST Name=gpu File=$DIR/dev/nvidia[0-$((FAKE_GPUS - 1))]
EOF
elif [ -f "$DIR/etc/gres.conf" ]; then
  any_running && die "$DIR/etc/gres.conf exists (fake GPUs) but LOCAL_SLURM_FAKE_GPUS=0: stop the cluster first"
  rm -f "$DIR/etc/gres.conf"
fi

[ -s "$DIR/etc/munge.key" ] || dd if=/dev/urandom of="$DIR/etc/munge.key" bs=1024 count=1 status=none
chmod 600 "$DIR/etc/munge.key"

if [ "$ACCOUNTING" = 1 ]; then
  [ -s "$DIR/etc/db.pass" ] || (umask 077; od -An -N12 -tx1 /dev/urandom | tr -d ' \n' > "$DIR/etc/db.pass")
  DB_PASS=$(cat "$DIR/etc/db.pass")
  # slurmdbd reads slurmdbd.conf (mode 600) from the directory of $SLURM_CONF.
  put_file "$DIR/etc/slurmdbd.conf" 600 <<EOF
AuthType=auth/munge
AuthInfo=socket=$MSOCK
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$DBD_PORT
SlurmUser=root
PidFile=$DIR/run/slurmdbd.pid
LogFile=$DIR/log/slurmdbd.log
DebugLevel=info
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=$DB_PASS
StorageLoc=slurm_acct_db
EOF
fi

# ------------------------------------------------------------------------------------ munged
if ! alive munged "$DIR/run/munged.pid"; then
  log "starting munged"
  rm -f "$MSOCK" "$MSOCK.lock"
  munged --socket="$MSOCK" --key-file="$DIR/etc/munge.key" --pid-file="$DIR/run/munged.pid" \
    --log-file="$DIR/log/munged.log" --seed-file="$DIR/var/munged.seed" \
    </dev/null >>"$DIR/log/munged.out" 2>&1 9>&- || fail_with "$DIR/log/munged.log" "munged failed to start"
  wait_for 15 alive munged "$DIR/run/munged.pid" || fail_with "$DIR/log/munged.log" "munged wrote no pid file"
fi
wait_for 15 sh -c "munge -S '$MSOCK' -n | unmunge -S '$MSOCK'" ||
  fail_with "$DIR/log/munged.log" "munge round trip failed"

# ------------------------------------------------------------------------------------ MariaDB + slurmdbd
if [ "$ACCOUNTING" = 1 ]; then
  DB_SOCK=$DIR/mysql.sock
  if [ ! -d "$DIR/mysql/mysql" ]; then
    log "initialising the MariaDB data directory"
    rm -rf "$DIR/mysql"
    mariadb-install-db --no-defaults --datadir="$DIR/mysql" --user=root --skip-test-db \
      --auth-root-authentication-method=socket >"$DIR/log/mariadb-install.log" 2>&1 ||
      fail_with "$DIR/log/mariadb-install.log" "mariadb-install-db failed"
  fi
  if ! alive mariadbd "$DIR/run/mariadbd.pid"; then
    need_port mariadbd "$DB_PORT"
    log "starting mariadbd"
    # setsid -f: mariadbd does not daemonise itself; stdio to files so no CI pipe is held open.
    setsid -f mariadbd --no-defaults --user=root --datadir="$DIR/mysql" --socket="$DB_SOCK" \
      --pid-file="$DIR/run/mariadbd.pid" --port="$DB_PORT" --bind-address=127.0.0.1 \
      --log-error="$DIR/log/mariadbd.log" --skip-log-bin --innodb-buffer-pool-size=512M \
      --innodb-log-file-size=64M --innodb-lock-wait-timeout=900 \
      </dev/null >>"$DIR/log/mariadbd.out" 2>&1 9>&-
    wait_for 60 alive mariadbd "$DIR/run/mariadbd.pid" || fail_with "$DIR/log/mariadbd.log" "mariadbd wrote no pid file"
  fi
  wait_up mariadbd "$DIR/run/mariadbd.pid" 60 mariadb-admin --no-defaults --socket="$DB_SOCK" -u root ping ||
    fail_with "$DIR/log/mariadbd.log" "mariadbd does not answer"
  mariadb --no-defaults --socket="$DB_SOCK" -u root <<EOF
CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
FLUSH PRIVILEGES;
EOF
  if ! alive slurmdbd "$DIR/run/slurmdbd.pid"; then
    need_port slurmdbd "$DBD_PORT"
    log "starting slurmdbd"
    slurmdbd </dev/null >>"$DIR/log/slurmdbd.out" 2>&1 9>&- || fail_with "$DIR/log/slurmdbd.log" "slurmdbd failed to start"
    wait_for 30 alive slurmdbd "$DIR/run/slurmdbd.pid" || fail_with "$DIR/log/slurmdbd.log" "slurmdbd wrote no pid file"
  fi
  wait_up slurmdbd "$DIR/run/slurmdbd.pid" 60 sacctmgr -n list cluster ||
    fail_with "$DIR/log/slurmdbd.log" "slurmdbd does not answer"
  if ! sacctmgr -n -P list cluster format=cluster 2>/dev/null | grep -qx "$CLUSTER"; then
    sacctmgr -i add cluster "$CLUSTER" >&2
  fi
fi

# ------------------------------------------------------------------------------------ slurmctld + slurmd
if ! alive slurmctld "$DIR/run/slurmctld.pid"; then
  need_port slurmctld "$CTLD_PORT"
  log "starting slurmctld"
  slurmctld -f "$CONF" </dev/null >>"$DIR/log/slurmctld.out" 2>&1 9>&- ||
    fail_with "$DIR/log/slurmctld.log" "slurmctld failed to start"
  wait_for 30 alive slurmctld "$DIR/run/slurmctld.pid" || fail_with "$DIR/log/slurmctld.log" "slurmctld wrote no pid file"
fi
wait_up slurmctld "$DIR/run/slurmctld.pid" 60 scontrol ping ||
  fail_with "$DIR/log/slurmctld.log" "slurmctld does not answer"

if ! alive slurmd "$DIR/run/slurmd.pid"; then
  need_port slurmd "$SLURMD_PORT"
  log "starting slurmd"
  slurmd -f "$CONF" </dev/null >>"$DIR/log/slurmd.out" 2>&1 9>&- || fail_with "$DIR/log/slurmd.log" "slurmd failed to start"
  wait_for 30 alive slurmd "$DIR/run/slurmd.pid" || fail_with "$DIR/log/slurmd.log" "slurmd wrote no pid file"
fi

# ------------------------------------------------------------------------------------ wait for idle
node_state() { sinfo -h -N -n "$HOST" -o '%T' 2>/dev/null | head -1; }
end=$((SECONDS + WAIT_S))
state=$(node_state)
while :; do
  case "$state" in
    idle | mixed | allocated | completing) break ;;
    down* | drain* | fail*)
      # A node left DOWN/DRAINED by an earlier run (or a config change) is brought back: slurmd runs.
      scontrol update nodename="$HOST" state=resume >/dev/null 2>&1 || true ;;
  esac
  if [ "$SECONDS" -ge "$end" ]; then
    scontrol show node "$HOST" >&2 || true
    fail_with "$DIR/log/slurmd.log" "node $HOST not idle after ${WAIT_S}s (state: ${state:-unknown})"
  fi
  sleep 0.25
  state=$(node_state)
done
gpus=""
[ "$FAKE_GPUS" -gt 0 ] && gpus=", gpu:$FAKE_GPUS"
log "node $HOST is $state ($NCPU CPUs, RealMemory=${MEM_MB}M$gpus, accounting=$ACCOUNTING);" \
  "ready in $(awk -v a="$T0" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}') s"

cat > "$DIR/env.sh" <<EOF
export SLURM_CONF=$CONF
export LOCAL_SLURM_DIR=$DIR
EOF
cat "$DIR/env.sh"
