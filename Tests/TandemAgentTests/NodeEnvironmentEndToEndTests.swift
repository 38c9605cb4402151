import Foundation
import TandemLinux
import TandemTestSupport
import Testing

/// The built `tandem-node serve` configured only by calico-node's variables, as the seed procedure sets them for an
/// IPv6-only node (`IP=none`, `IP6=autodetect`, `FELIX_IPV6SUPPORT=true`, `CALICO_IPV6POOL_CIDR`,
/// `CALICO_ROUTER_ID=hash`, `NODENAME`), in a network namespace of its own with one IPv6 address; the Node and the
/// pools it registered are read back with the built `tandemctl`. Needs root (`unshare --net`).
@Suite(.enabled(if: getuid() == 0, "unshare --net needs root")) struct NodeEnvironmentEndToEndTests {
    @Test func theSeedProceduresIPv6OnlyVariablesRegisterTheNode() throws {
        let scratch = try ScratchDirectory("node-env-e2e")
        defer { scratch.remove() }
        let log = scratch.file("tandem-node.log")
        let products = TestProducts.directory()
        let agent = products.appendingPathComponent("tandem-node").path
        let tandemctl = products.appendingPathComponent("tandemctl").path
        let script = """
            ip link set lo up
            ip link add eth0 type veth peer name uplink
            ip addr add fd99:e2e::5/64 dev eth0 nodad
            ip link set eth0 up
            ip link set uplink up
            env -i PATH="$PATH" IP=none IP6=autodetect FELIX_IPV6SUPPORT=true CALICO_IPV6POOL_CIDR=fd00:e2e::/56 \
              CALICO_ROUTER_ID=hash NODENAME=v6-only-node TANDEM_DATASTORE="sqlite://$2/tandem.db" \
              FELIX_LOGSEVERITYSCREEN=debug FELIX_NOSUCHSETTING=1 \
              "$1" serve --cni-socket @tandem-env-e2e --no-bgp --policy-backend none --health-port 0 \
              --mtu-file none --bird-dir "$2" > "$3" 2>&1 &
            agent=$!
            i=0
            while ! grep -q 'registered node' "$3" && kill -0 $agent 2>/dev/null && [ $i -lt 300 ]; do
              sleep 0.1; i=$((i + 1))
            done
            kill -TERM $agent
            wait $agent
            # A bad value: refused naming the variable, nothing written.
            env -i PATH="$PATH" CALICO_IPV4POOL_BLOCK_SIZE=19 NODENAME=bad-node \
              TANDEM_DATASTORE="sqlite://$2/bad.db" "$1" serve --cni-socket @tandem-env-e2e-bad --no-bgp \
              --policy-backend none --health-port 0 --mtu-file none --bird-dir "$2" > "$2/bad.log" 2>&1
            echo "bad=$?" >> "$2/bad.log"
            """
        let run = try ChildProcess.run(
            "/usr/bin/unshare", ["--net", "--", "/bin/sh", "-c", script, "sh", agent, scratch.path, log],
            timeout: .seconds(90))
        let output = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
        #expect(run.status == 0, "\(output)")
        #expect(output.contains("registered node v6-only-node: IPv4 none, IPv6 fd99:e2e::5/64"), "\(output)")
        #expect(output.contains("FELIX_NOSUCHSETTING: no FelixConfiguration field"), "\(output)")
        let datastore = "sqlite://\(scratch.path)/tandem.db"
        let node = try ChildProcess.run(
            tandemctl, ["get", "node", "v6-only-node", "-o", "json", "--datastore", datastore], timeout: .seconds(30))
        let nodeJSON = try #require(
            (try? JSONSerialization.jsonObject(with: Data(node.stdout))) as? [String: Any], "\(node.stdoutText)")
        let spec = nodeJSON["spec"] as? [String: Any]
        let bgp = spec?["bgp"] as? [String: Any]
        #expect(bgp?["ipv6Address"] as? String == "fd99:e2e::5/64", "\(node.stdoutText)")
        #expect(bgp?["ipv4Address"] == nil, "\(node.stdoutText)")
        let annotations = (nodeJSON["metadata"] as? [String: Any])?["annotations"] as? [String: String]
        #expect(annotations?["tandem.dev/router-id"]?.isEmpty == false, "\(node.stdoutText)")
        let pools = try ChildProcess.run(
            tandemctl, ["get", "ippool", "-o", "json", "--datastore", datastore], timeout: .seconds(30))
        #expect(
            pools.stdoutText.contains("\"cidr\": \"fd00:e2e::/56\"")
                || pools.stdoutText.contains("\"cidr\":\"fd00:e2e::/56\""),
            "\(pools.stdoutText)")
        #expect(pools.stdoutText.contains("default-ipv6-ippool"), "\(pools.stdoutText)")
        // As calico-node: without CALICO_IPV4POOL_CIDR=none the IPv4 default pool is made too.
        #expect(pools.stdoutText.contains("192.168.0.0/16"), "\(pools.stdoutText)")
        let bad = (try? String(contentsOfFile: scratch.file("bad.log"), encoding: .utf8)) ?? ""
        #expect(bad.contains("CALICO_IPV4POOL_BLOCK_SIZE=\"19\""), "\(bad)")
        #expect(!bad.contains("bad=0"), "\(bad)")
        #expect(!FileManager.default.fileExists(atPath: scratch.file("bad.db")), "nothing written: \(bad)")
    }
}
