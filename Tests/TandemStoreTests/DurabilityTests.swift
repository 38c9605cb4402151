import Foundation
import TandemTestSupport
import Testing

@testable import TandemStoreSQLite

@Suite struct DurabilityTests {
    /// Commits are synced to disk (synchronous = FULL on the connection that writes), for a new store and for one
    /// opened again: the WAL setup of the SQLite library must not weaken it.
    @Test func everyCommitIsSynced() throws {
        let scratch = try ScratchDirectory("durability")
        defer { scratch.remove() }
        let path = scratch.file("store.db")
        #expect(try SQLiteDatastore(path: path).writerSynchronousMode() == 2)
        #expect(try SQLiteDatastore(path: path).writerSynchronousMode() == 2)
    }
}
