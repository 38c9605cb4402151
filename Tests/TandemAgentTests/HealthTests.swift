import Testing

@testable import TandemAgent

@Suite struct HealthTests {
    @Test func aComponentThatStopsReportingIsNeitherLiveNorReady() {
        let health = HealthAggregator()
        health.register("CalculationGraph", timeout: .seconds(30))
        health.register("FelixStartup", timeout: nil)
        // Nothing reported yet: not live, not ready.
        #expect(!health.summary().live && !health.summary().ready)
        health.report("FelixStartup", live: true, ready: true)
        health.report("CalculationGraph", live: true, ready: false, detail: "the datastore has not answered for 4 s")
        var summary = health.summary()
        #expect(summary.live && !summary.ready)
        #expect(summary.table.contains("CalculationGraph | 30s | reporting live | reporting non-ready | the datastore"))
        health.report("CalculationGraph", live: true, ready: true, detail: "in sync")
        #expect(health.summary().ready)
        // 31 s without a report: the timeout takes both away, and says so.
        summary = health.summary(now: .now + .seconds(31))
        #expect(!summary.live && !summary.ready)
        #expect(summary.table.contains("no report for 31 s (timeout 30.0 seconds); last: in sync"), "\(summary.table)")
    }

    @Test func theEndpointsAnswerLikeFelixs() {
        let healthy = HealthAggregator.Summary(live: true, ready: false, table: "T\n")
        #expect(HealthServer.answer(method: "GET", path: "/liveness", healthy) == (200, "T\n"))
        #expect(HealthServer.answer(method: "GET", path: "/readiness", healthy) == (503, "T\n"))
        #expect(HealthServer.answer(method: "GET", path: "/readiness?verbose", healthy).0 == 503)
        #expect(HealthServer.answer(method: "GET", path: "/metrics", healthy).0 == 404)
        #expect(HealthServer.answer(method: "POST", path: "/liveness", healthy).0 == 405)
    }
}
