#!/usr/bin/env bash
# bench --url against a cluster's leader (3 nats-servers, 2 engine nodes) and
# against a single node, alternating, ROUNDS rounds; one JSON report per run.
# usage: ops/nats/bench-cluster.sh BIN ROUNDS WORKLOADS...   (from the repository root;
# nats-server 2.10+ on PATH; ports 25421-25823 and 28080-28081 free)
set -u
BIN=$1; SRC=$(pwd); ROUNDS=$2; shift 2; WORKLOADS="$*"
W=${BENCH_WORK:-/tmp/bench-cluster}/work; OUT=${BENCH_WORK:-/tmp/bench-cluster}/runs
NATS=${NATS_SERVER_BIN:-$(command -v nats-server)}
rm -rf $W; mkdir -p $W $OUT
pids=()
cleanup() { for p in "${pids[@]}"; do kill -9 $p 2>/dev/null; done; }
trap cleanup EXIT
# three nats-servers from ops/nats with addresses and stores replaced
for i in 1 2 3; do
  sed -e "s|listen: 0.0.0.0:4222|listen: 127.0.0.1:2542$i|" -e "s|http: 0.0.0.0:8222|http: 127.0.0.1:2582$i|" \
      -e "s|listen: 0.0.0.0:6222|listen: 127.0.0.1:2562$i|" -e "s|/var/lib/nats/nats-$i|$W/nats-$i|" \
      -e "s|nats-route://nats-\([123]\):6222|nats-route://127.0.0.1:2562\1|" $SRC/ops/nats/nats-$i.conf > $W/nats-$i.conf
  $NATS -c $W/nats-$i.conf > $W/nats-$i.log 2>&1 & pids+=($!)
done
for i in 1 2 3; do until curl -s 127.0.0.1:2582$i/healthz | grep -q ok; do sleep 0.2; done; done
sleep 2
URLS=nats://127.0.0.1:25421,nats://127.0.0.1:25422,nats://127.0.0.1:25423
wait_ready() { until curl -s $1/ready | grep -q "\"$2\""; do sleep 0.1; done; }
for r in $(seq 1 $ROUNDS); do
  for w in $WORKLOADS; do
    for v in single cluster; do
      d=$W/$v-$w-$r; mkdir -p $d
      if [ $v = single ]; then
        $BIN serve --addr 127.0.0.1:28080 --data-dir $d/a --empty --admin-token t > $d/a.log 2>&1 & p=$!; pids+=($p); ps=($p)
      else
        name=bench$r$w
        $BIN serve --addr 127.0.0.1:28080 --data-dir $d/a --empty --admin-token t --cluster $URLS --node-id a --cluster-name ${name//_/-} --advertise-url http://127.0.0.1:28080 > $d/a.log 2>&1 & p=$!; pids+=($p)
        wait_ready http://127.0.0.1:28080 ready
        $BIN serve --addr 127.0.0.1:28081 --data-dir $d/b --empty --admin-token t --cluster $URLS --node-id b --cluster-name ${name//_/-} --advertise-url http://127.0.0.1:28081 > $d/b.log 2>&1 & q=$!; pids+=($q); ps=($p $q)
        wait_ready http://127.0.0.1:28081 standby
      fi
      wait_ready http://127.0.0.1:28080 ready
      $BIN bench --url http://127.0.0.1:28080 --admin-token t --workload $w --concurrency 64 --duration-secs 15 --warmup-secs 3 --json > $OUT/$w.$v.$r.json 2> $OUT/$w.$v.$r.err
      echo "$r $w $v $(python3 -c "import json;d=json.load(open('$OUT/$w.$v.$r.json'));t=d['total'];print(round(t['ok_per_sec']),t['latency_ms']['p99'],d.get('errors'))" 2>&1) load $(uptime | sed 's/.*average: //')"
      [ $v = cluster ] && curl -s "127.0.0.1:25821/jsz?streams=true" > $OUT/$w.$v.$r.jsz
      for p in "${ps[@]}"; do kill -TERM $p; done; for p in "${ps[@]}"; do wait $p 2>/dev/null; done
    done
  done
done
