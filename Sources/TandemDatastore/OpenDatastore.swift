import Foundation
import TandemStore
import TandemStoreEtcd
import TandemStoreSQLite

/// Opens the datastore a URL names: `sqlite:///path.db`, `memory://NAME` (this process's memory, for tests), or an
/// etcd cluster (`etcd://host:2379[,host:2379]`,
/// `etcd+https://...`). For etcd, settings the URL leaves out are taken from Calico's variables in `environment`:
/// `ETCD_CA_CERT_FILE`, `ETCD_CERT_FILE`, `ETCD_KEY_FILE`, `ETCD_USERNAME` and `ETCD_PASSWORD` (or the URL's
/// `password-file=`). `watchPollInterval` is how often a SQLite watch looks for new revisions.
public func openDatastore(
    url: String, watchPollInterval: Duration = .milliseconds(10),
    environment: [String: String] = ProcessInfo.processInfo.environment
) throws -> any Datastore {
    switch try DatastoreLocation(url: url) {
    case .sqlite(let path):
        return try SQLiteDatastore(path: path, watchPollInterval: watchPollInterval)
    case .memory(let name):
        return MemoryDatastore.named(name)
    case .etcd(var location):
        if location.useTLS {
            location.caCertFile = location.caCertFile ?? nonEmpty(environment["ETCD_CA_CERT_FILE"])
            if location.certFile == nil && location.keyFile == nil {
                location.certFile = nonEmpty(environment["ETCD_CERT_FILE"])
                location.keyFile = nonEmpty(environment["ETCD_KEY_FILE"])
            }
        }
        location.username = location.username ?? nonEmpty(environment["ETCD_USERNAME"])
        var password = location.username == nil ? nil : environment["ETCD_PASSWORD"]
        if let file = location.passwordFile {
            do {
                password = try String(contentsOfFile: file, encoding: .utf8).trimmingCharacters(in: .newlines)
            } catch {
                throw DatastoreError.invalidLocation(
                    "cannot read the etcd password file \(file) named by datastore URL \"\(url)\": "
                        + error.localizedDescription)
            }
        }
        try location.validate(url: url)
        return try EtcdDatastore(location: location, password: password)
    }
}

private func nonEmpty(_ value: String?) -> String? { value?.isEmpty == false ? value : nil }
