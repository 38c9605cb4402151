import Foundation
import TandemCNI
import TandemCore
import TandemIPAM
import TandemStore
import TandemStoreSQLite
import Testing

/// Which calls are Kubernetes pods: only those whose CNI_ARGS name both the namespace and the pod (Calico's rule).
/// Any other call is a runtime's container, named by its container ID, whatever else CNI_ARGS carries.
@Suite struct CNIIdentityTests {
    /// podman passes its container name as K8S_POD_NAME without a namespace; such names have `_`, which no
    /// Kubernetes name has. The call is not a pod's: ADD and DEL work, and the endpoint, the host veth and the IPAM
    /// allocation are the container's.
    @Test(arguments: [
        "IgnoreUnknown=1;K8S_POD_NAME=a_b",
        "IgnoreUnknown=1;K8S_POD_NAMESPACE=default",
        "IgnoreUnknown=1;K8S_POD_NAME=a_b;K8S_POD_INFRA_CONTAINER_ID=abc",
        "IgnoreUnknown=1",
    ])
    func containerWithoutBothPodNamesIsNamedByItsID(args: String) async throws {
        var lab = try PodLab()
        defer { lab.remove() }
        let pod = try lab.newPod()
        let container = "c0ffee\(UInt32.random(in: 0...UInt32.max))"
        let config = lab.config()
        let add = try lab.run("ADD", pod: pod, container: container, config: config, args: args)
        #expect(add.status == 0, "\(add.output)")
        let hostVeth = hostVethName(namespace: nil, pod: nil, containerID: container)
        let interfaces = add.json["interfaces"] as? [[String: Any]] ?? []
        #expect(interfaces.first?["name"] as? String == hostVeth)
        let left = try await lab.leftovers()
        #expect(left.endpoints == ["node--a-cni-\(container)-eth0"])
        #expect(left.handles == ["k8s-pod-network.\(container)"])
        // The allocations name no pod and no namespace.
        let attributes = try await Self.allocationAttributes(lab)
        #expect(attributes.count == 2)
        for attribute in attributes {
            #expect(attribute["pod"] == nil && attribute["namespace"] == nil, "\(attribute)")
            #expect(attribute["node"] == "node-a")
        }

        let del = try lab.run("DEL", pod: pod, container: container, config: config, args: args)
        #expect(del.status == 0, "\(del.output)")
        #expect(!(try lab.node.run("ip link show").stdout.contains(hostVeth)))
        let after = try await lab.leftovers()
        #expect(after.handles.isEmpty)
        #expect(after.endpoints.isEmpty)
    }

    /// Both names given: a Kubernetes pod, recorded as Calico records it.
    @Test func podWithBothNamesIsKubernetes() async throws {
        var lab = try PodLab()
        defer { lab.remove() }
        let pod = try lab.newPod()
        let add = try lab.run(
            "ADD", pod: pod, container: "ctr-k8s", config: lab.config(),
            args: "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web")
        #expect(add.status == 0, "\(add.output)")
        let left = try await lab.leftovers()
        #expect(left.endpoints == ["node--a-k8s-web-eth0"])
        let attributes = try await Self.allocationAttributes(lab)
        #expect(attributes.count == 2)
        #expect(attributes.allSatisfy { $0["pod"] == "web" && $0["namespace"] == "default" }, "\(attributes)")
        let del = try lab.run("DEL", pod: pod, container: "ctr-k8s", config: lab.config())
        #expect(del.status == 0, "\(del.output)")
        #expect(try await lab.leftovers().endpoints.isEmpty)
    }

    /// The secondary attributes of every allocation in every block of the lab's store.
    static func allocationAttributes(_ lab: PodLab) async throws -> [[String: String]] {
        let store = try SQLiteDatastore(path: lab.scratch.file("tandem.db"))
        var found: [[String: String]] = []
        for family in [IPFamily.v4, .v6] {
            for item in try await store.list(prefix: IPAMKeys.blockPrefix(family)).items {
                let block = try JSONDecoder().decode(Block.self, from: Data(item.value))
                for index in block.allocations.compactMap({ $0 }) {
                    found.append(block.attributes[index].secondary ?? [:])
                }
            }
        }
        return found
    }
}
