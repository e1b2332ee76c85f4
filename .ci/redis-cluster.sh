#!/usr/bin/env bash
# A 3-master / 3-replica Redis Cluster on loopback (ports BASE..BASE+5, default 7001–7006) for
# the cluster tests (test/redis-cluster/). Idempotent: does nothing when the cluster answers
# cluster_state:ok; restarts any node that is down (a test killed it) and re-creates the cluster
# when it cannot heal. Tests find it through TEST_REDIS_CLUSTER=127.0.0.1:7001.
set -euo pipefail
base="${REDIS_CLUSTER_BASE_PORT:-7001}"
dir="${REDIS_CLUSTER_DIR:-/tmp/agw-redis-cluster}"
ports=$(seq "$base" $((base + 5)))

command -v redis-server >/dev/null || { echo "warning: no redis-server: Redis Cluster tests will fail under CI=true" >&2; exit 0; }

state_ok() { redis-cli -p "$base" cluster info 2>/dev/null | grep -q '^cluster_state:ok'; }
# Every master has a replica, so a failover has somewhere to go (after earlier failovers a
# restarted node may have rejoined beside another one).
balanced() {
  local nodes masters
  nodes=$(redis-cli -p "$base" cluster nodes 2>/dev/null) || return 1
  masters=$(printf '%s\n' "$nodes" | awk '$3 ~ /master/ && $3 !~ /fail/ && NF > 8 {print $1}')
  [ "$(printf '%s\n' "$masters" | grep -c .)" = 3 ] || return 1
  for id in $masters; do printf '%s\n' "$nodes" | awk -v m="$id" '$3 ~ /slave/ && $4 == m' | grep -q . || return 1; done
}
up() { redis-cli -p "$1" ping 2>/dev/null | grep -q PONG; }
wait_for() { # wait_for <tries> <command...>: bounded, 0.2 s apart
  local tries=$1; shift
  for _ in $(seq "$tries"); do "$@" && return 0; sleep 0.2; done
  return 1
}
start_node() {
  mkdir -p "$dir/$1"
  # nodes.conf lives in the node's dir: a restarted node rejoins the cluster as the replica of
  # whoever took over its slots.
  redis-server --port "$1" --bind 127.0.0.1 --cluster-enabled yes --cluster-config-file nodes.conf \
    --cluster-node-timeout 2000 --cluster-replica-validity-factor 0 --save "" --appendonly no --dir "$dir/$1" --daemonize yes \
    --logfile "$dir/$1/redis.log" >/dev/null
  wait_for 50 up "$1"
}

all_up=true
for port in $ports; do up "$port" || { all_up=false; start_node "$port"; }; done
# A replica may always take over, however long it was apart (a node a test restarted included).
for port in $ports; do redis-cli -p "$port" config set cluster-replica-validity-factor 0 >/dev/null 2>&1 || true; done
if $all_up && state_ok && balanced; then echo "redis cluster ok on 127.0.0.1:$base-$((base + 5))"; exit 0; fi
# Restarted nodes rejoin by themselves; give the cluster a moment to agree.
if wait_for 50 state_ok && [ "$(redis-cli -p "$base" cluster info | grep -c 'cluster_known_nodes:6')" = 1 ] && wait_for 50 balanced; then
  echo "redis cluster healed on 127.0.0.1:$base-$((base + 5))"; exit 0
fi

# Not a cluster yet (or beyond healing): wipe every node and create it anew.
for port in $ports; do redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true; done
sleep 0.5
rm -rf "$dir"
for port in $ports; do start_node "$port"; done
redis-cli --cluster create $(for port in $ports; do printf '127.0.0.1:%s ' "$port"; done) \
  --cluster-replicas 1 --cluster-yes >/dev/null
wait_for 100 state_ok || { echo "redis cluster on $base did not reach cluster_state:ok" >&2; exit 1; }
# Every replica attached, so a failover has somewhere to go.
wait_for 100 balanced || { echo "redis cluster replicas did not attach" >&2; exit 1; }
echo "redis cluster created on 127.0.0.1:$base-$((base + 5))"
