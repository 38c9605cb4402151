// The pre-AsyncHTTPClient etcd client's TLS shim, kept in the Benchmarks package only as the baseline that
// `tandem-bench etcd-client` compares the current client against. Not used by Tandem itself.
// A small TLS client over OpenSSL for the etcd datastore backend. OpenSSL's API is macros and opaque pointers,
// which Swift imports poorly; these few functions are all the backend needs.
#ifndef CLEGACYTLS_H
#define CLEGACYTLS_H

#include <stddef.h>
#include <sys/types.h>

typedef struct ctls_context ctls_context;
typedef struct ctls_session ctls_session;

/// A client context: verifies the server against `ca_file` (or the system's roots when NULL) and presents
/// `cert_file` / `key_file` (PEM) when both are given. Returns NULL and a message in `error` on failure.
ctls_context *ctls_context_new(const char *ca_file, const char *cert_file, const char *key_file, char *error,
                               size_t error_size);
void ctls_context_free(ctls_context *context);

/// Runs the TLS handshake on the connected socket `fd` and checks that the certificate names `host` (a DNS
/// name or an IP address literal). Returns NULL and a message in `error` on failure.
ctls_session *ctls_connect(ctls_context *context, int fd, const char *host, char *error, size_t error_size);

/// Writes all of `length` bytes; returns 0, or -1 with a message in `error`.
int ctls_write_all(ctls_session *session, const void *bytes, size_t length, char *error, size_t error_size);

/// Reads up to `capacity` bytes: the count, 0 at the end of the stream, or -1 with a message in `error`.
ssize_t ctls_read(ctls_session *session, void *buffer, size_t capacity, char *error, size_t error_size);

/// Whether decrypted bytes are already buffered (poll() on the socket would not see them).
int ctls_pending(ctls_session *session);

void ctls_session_free(ctls_session *session);

#endif
