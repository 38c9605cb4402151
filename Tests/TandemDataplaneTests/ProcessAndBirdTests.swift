import Foundation
import TandemDataplane
import TandemLinux
import TandemTestSupport
import Testing

/// Child processes run under a timeout: a hung tool is killed and its standard error is in the error.
@Suite struct ChildProcessTimeoutTests {
    @Test func aHungToolIsKilledAndWhatItSaidIsReported() throws {
        let started = ContinuousClock.now
        do {
            _ = try ChildProcess.run(
                "/bin/sh", ["-c", "echo 'table is locked' >&2; exec sleep 30"], timeout: .milliseconds(300))
            Issue.record("the hung tool was waited for")
        } catch let error as ChildProcessTimeout {
            #expect(error.description.contains("did not finish within 300 ms and was killed"))
            #expect(error.stderr.contains("table is locked"))
        }
        #expect(ContinuousClock.now - started < .seconds(5))
        // A tool that finishes in time is not affected.
        let quick = try ChildProcess.run("/bin/sh", ["-c", "echo ok"], timeout: .seconds(5))
        #expect(quick.status == 0 && quick.stdoutText == "ok\n")
    }
}

/// The BIRD manager against stand-in `bird` and `birdc` scripts (the real daemon runs in the lab tests): it loads a
/// changed configuration only once, starts a BIRD that is not running, keeps a rejected configuration out, and on a
/// resync repairs a configuration file edited by hand.
@Suite struct BirdManagerTests {
    /// `bird -p -c FILE` rejects a file containing "bad"; `bird -c` "starts" (creates the socket file);
    /// `birdc -s SOCK show status` answers while the socket file exists; `birdc configure` records the call.
    func fakeBird(_ directory: ScratchDirectory) throws -> BirdControl {
        let bird = try directory.write(
            "bird",
            """
            #!/bin/sh
            if [ "$1" = "-p" ]; then grep -q bad "$3" && { echo "syntax error in $3" >&2; exit 1; }; exit 0; fi
            while [ $# -gt 0 ]; do [ "$1" = "-s" ] && touch "$2"; shift; done
            echo started >> \(directory.path)/calls
            """)
        let birdc = try directory.write(
            "birdc",
            """
            #!/bin/sh
            [ -e "$2" ] || exit 1
            if [ "$3" = "configure" ]; then echo configure >> \(directory.path)/calls; echo "Reconfigured"; fi
            exit 0
            """)
        chmod(bird, 0o755)
        chmod(birdc, 0o755)
        return BirdControl(
            configPath: directory.path + "/bird.conf", socketPath: directory.path + "/bird.ctl", bird: bird,
            birdc: birdc)
    }

    func calls(_ directory: ScratchDirectory) -> [String] {
        ((try? String(contentsOfFile: directory.path + "/calls", encoding: .utf8)) ?? "").split(separator: "\n")
            .map(String.init)
    }

    @Test func startsReloadsOnChangeAndRepairsAnEditedFile() throws {
        let directory = try ScratchDirectory("bird")
        defer { directory.remove() }
        let manager = BirdManager(bird: try fakeBird(directory))
        #expect(try manager.apply(resync: true) == ManagerReport())  // nothing wanted yet
        manager.setDesired("router id 1.2.3.4;\n")
        #expect(try manager.apply(resync: false).changes.first?.hasPrefix("BIRD started") == true)
        #expect(calls(directory) == ["started"])
        // Unchanged: no process run at all.
        #expect(try manager.apply(resync: false) == ManagerReport())
        manager.setDesired("router id 1.2.3.5;\n")
        #expect(try manager.apply(resync: false).changes.first?.hasPrefix("BIRD reconfigured") == true)
        #expect(calls(directory) == ["started", "configure"])
        // Someone edits the file: the resync puts the agent's configuration back.
        try "router id 9.9.9.9;\n".write(toFile: directory.path + "/bird.conf", atomically: true, encoding: .utf8)
        #expect(try manager.apply(resync: true).changes.first?.hasPrefix("BIRD reconfigured") == true)
        #expect(try String(contentsOfFile: directory.path + "/bird.conf", encoding: .utf8) == "router id 1.2.3.5;\n")
        // BIRD gone: the resync starts it again.
        unlink(directory.path + "/bird.ctl")
        #expect(try manager.apply(resync: true).changes.first?.hasPrefix("BIRD started") == true)
    }

    @Test func aRejectedConfigurationIsKeptOutAndReported() throws {
        let directory = try ScratchDirectory("bird")
        defer { directory.remove() }
        let manager = BirdManager(bird: try fakeBird(directory))
        manager.setDesired("router id 1.2.3.4;\n")
        _ = try manager.apply(resync: false)
        manager.setDesired("bad configuration\n")
        do {
            _ = try manager.apply(resync: false)
            Issue.record("a configuration BIRD rejects was applied")
        } catch {
            #expect("\(error)".contains("syntax error"))
        }
        #expect(try String(contentsOfFile: directory.path + "/bird.conf", encoding: .utf8) == "router id 1.2.3.4;\n")
        #expect(FileManager.default.fileExists(atPath: directory.path + "/bird.conf.rejected"))
    }
}

/// The real policy tools in a namespace of their own: nftables in process (libnftables) and through the `nft`
/// program, the same answers; refused input is kept for the operator and named in the error.
@Suite struct SystemPolicyToolsTests {
    @Test(arguments: [true, false])
    func loadListAndRefuse(library: Bool) throws {
        let ns = try TestNamespace("tools")
        defer { ns.remove() }
        let scratch = try ScratchDirectory("tools")
        defer { scratch.remove() }
        try NetworkNamespace.run(in: ns.path) {
            let tools = SystemPolicyTools(stateDirectory: scratch.path, library: library)
            #expect((tools.library != nil) == library, "libnftables.so.1 is installed with nftables")
            #expect(try tools.listNftTable("tandemtest") == nil)
            try tools.loadNft("table inet tandemtest {\n\tchain c {\n\t\treturn\n\t}\n}\n")
            let listing = try #require(try tools.listNftTable("tandemtest"))
            #expect(listing.contains("chain c {"))
            do {
                try tools.loadNft("add rule inet tandemtest nosuchchain return\n")
                Issue.record("nft accepted a rule for a missing chain")
            } catch {
                #expect("\(error)".contains("kept in \(scratch.path)/policy.nft.rejected"), "\(error)")
                #expect("\(error)".contains("nosuchchain"), "\(error)")
            }
        }
        #expect(try ns.run("nft list table inet tandemtest").stdout.contains("chain c"))
    }
}
