import Foundation
import TandemCNI
import TandemTestSupport
import Testing

/// Network configurations and container IDs Tandem used to read leniently (issue 19, item 7), run as a runtime
/// runs the plugin, alone and through the agent: a bad field is refused before anything is made, with a CNI error
/// that names it and its value; upper-case container IDs, which the CNI spec allows, work from ADD to DEL.
@Suite struct LenientCNIInputTests {
    /// `tandem` linked as `tandem-ipam` beside the lab's files.
    func ipamBinary(_ lab: PodLab) throws -> String {
        let path = lab.scratch.file("tandem-ipam")
        if !FileManager.default.fileExists(atPath: path) {
            try FileManager.default.createSymbolicLink(
                atPath: path, withDestinationPath: TestProducts.directory().appendingPathComponent("tandem").path)
        }
        return path
    }

    @Test(arguments: [false, true])
    func badFieldsAreRefusedNamingTheFieldAndValue(throughAgent: Bool) async throws {
        var lab = try PodLab()
        defer { lab.remove() }
        if throughAgent { try lab.startAgent() }
        let pod = try lab.newPod()
        let good = lab.config()
        let ipam = try ipamBinary(lab)
        let tandem = TestProducts.directory().appendingPathComponent("tandem").path
        // (what, plugin binary, configuration, container ID, expected code, words the message must hold)
        let cases: [(String, String, String, String, Int, [String])] = [
            (
                "no cniVersion", tandem, good.replacingOccurrences(of: "\"cniVersion\":\"1.0.0\",", with: ""), "ctr",
                CNIError.invalidConfig, ["cniVersion"]
            ),
            (
                "numeric cniVersion", tandem, good.replacingOccurrences(of: "\"1.0.0\"", with: "1"), "ctr",
                CNIError.invalidConfig, ["cniVersion", "1"]
            ),
            (
                "ipam a string", tandem, try replacingIPAM(in: good, with: "x"), "ctr", CNIError.invalidConfig,
                ["ipam", "x"]
            ),
            (
                "numeric nodename", tandem,
                good.replacingOccurrences(of: "\"nodename\":\"node-a\"", with: "\"nodename\":5"), "ctr",
                CNIError.invalidConfig, ["nodename", "5"]
            ),
            (
                "IPAM plugin without cniVersion", ipam,
                good.replacingOccurrences(of: "\"cniVersion\":\"1.0.0\",", with: ""), "ctr", CNIError.invalidConfig,
                ["cniVersion"]
            ),
            (
                "IPAM plugin with ipam a string", ipam, try replacingIPAM(in: good, with: "x"), "ctr",
                CNIError.invalidConfig, ["ipam", "x"]
            ),
            (
                "IPAM plugin with a numeric nodename", ipam,
                good.replacingOccurrences(of: "\"nodename\":\"node-a\"", with: "\"nodename\":5"), "ctr",
                CNIError.invalidConfig, ["nodename", "5"]
            ),
            ("a container ID with a slash", tandem, good, "bad/id", CNIError.invalidEnvironment, ["bad/id"]),
            ("a container ID ending in '-'", tandem, good, "bad-", CNIError.invalidEnvironment, ["bad-"]),
        ]
        for (label, binary, config, container, code, words) in cases {
            let run = try lab.run(
                "ADD", binary: binary, pod: pod, container: container, config: config,
                args: "IgnoreUnknown=1")
            #expect(run.status != 0, "\(label): \(run.output)")
            #expect(run.json["code"] as? Int == code, "\(label): \(run.output)")
            let message = "\(run.json["msg"] as? String ?? "") \(run.json["details"] as? String ?? "")"
            for word in words { #expect(message.contains(word), "\(label): \(run.output)") }
            #expect(!(try pod.run("ip link show").stdout.contains("eth0")), "\(label)")
            #expect(!(try lab.node.run("ip link show").stdout.contains("cali")), "\(label)")
            let left = try await lab.leftovers()
            #expect(left.handles.isEmpty && left.endpoints.isEmpty, "\(label): \(left)")
        }
        // VERSION needs no configuration worth the name: it still answers.
        let version = try lab.run("VERSION", pod: nil, container: "", config: "{}")
        #expect(version.status == 0, "\(version.output)")
    }

    func replacingIPAM(in config: String, with value: Any) throws -> String {
        var object = try JSONSerialization.jsonObject(with: Data(config.utf8)) as! [String: Any]
        object["ipam"] = value
        return String(decoding: try JSONSerialization.data(withJSONObject: object), as: UTF8.self)
    }

    /// An upper-case container ID outside Kubernetes: its veth keeps the ID's first 11 characters (as Calico's
    /// does), its endpoint's name holds it in lower case, its IPAM handle as sent; CHECK and DEL find all three.
    /// Inside Kubernetes the pod's names are used and the ID is only recorded.
    @Test(arguments: [false, true])
    func upperCaseContainerIDsWorkFromAddToDel(throughAgent: Bool) async throws {
        var lab = try PodLab()
        defer { lab.remove() }
        if throughAgent { try lab.startAgent() }
        let config = lab.config()
        let outside = try lab.newPod()
        let container = "UPPERcase0123-ID"
        let args = "IgnoreUnknown=1"
        let add = try lab.run("ADD", pod: outside, container: container, config: config, args: args)
        #expect(add.status == 0, "\(add.output)")
        let veth = hostVethName(namespace: nil, pod: nil, containerID: container)
        #expect(veth == "caliUPPERcase01")
        #expect(try lab.node.run("ip link show \(veth)").status == 0)
        for address in resultAddresses(add.json) { #expect(try PodLab.ping(from: outside, address)) }
        var left = try await lab.leftovers()
        #expect(left.endpoints == ["node--a-cni-uppercase0123--id-eth0"], "\(left)")
        #expect(left.handles == ["k8s-pod-network.\(container)"], "\(left)")
        let check = try lab.run(
            "CHECK", pod: outside, container: container, config: try withPrevResult(config, add.json), args: args)
        #expect(check.status == 0, "\(check.output)")
        let del = try lab.run("DEL", pod: outside, container: container, config: config, args: args)
        #expect(del.status == 0, "\(del.output)")
        #expect(try lab.hostVethsGone(veth))
        left = try await lab.leftovers()
        #expect(left.handles.isEmpty && left.endpoints.isEmpty, "\(left)")

        let inside = try lab.newPod()
        let kubernetesID = "0123ABCDEF4567abcdef"
        let k8sAdd = try lab.run("ADD", pod: inside, container: kubernetesID, config: config)
        #expect(k8sAdd.status == 0, "\(k8sAdd.output)")
        left = try await lab.leftovers()
        #expect(left.endpoints == ["node--a-k8s-web-eth0"] && left.handles == ["k8s-pod-network.\(kubernetesID)"])
        let k8sDel = try lab.run("DEL", pod: inside, container: kubernetesID, config: config)
        #expect(k8sDel.status == 0, "\(k8sDel.output)")
        left = try await lab.leftovers()
        #expect(left.handles.isEmpty && left.endpoints.isEmpty, "\(left)")
    }
}
