# Shared by the lab benchmarks (source it from the repository root): the release products a lab runs, and the
# median of numbers on standard input.
build_lab_products() {
  for product in tandem tandem-cni tandem-node tandemctl tandem-lab; do
    swift build -c release --static-swift-stdlib --product "$product" >/dev/null
  done
}
median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }
# Gbit/s received by the server in one iperf3 run: iperf3_gbits NAMESPACE TARGET SECONDS
iperf3_gbits() {
  ip netns exec "$1" iperf3 -c "$2" -t "$3" -J \
    | python3 -c 'import json,sys; print("%.2f" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"] / 1e9))'
}
