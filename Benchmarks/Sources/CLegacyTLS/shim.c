#include "CLegacyTLS.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

struct ctls_context {
    SSL_CTX *ctx;
};

struct ctls_session {
    SSL *ssl;
};

static void describe(char *error, size_t error_size, const char *what) {
    unsigned long code = ERR_get_error();
    if (code != 0) {
        char reason[256];
        ERR_error_string_n(code, reason, sizeof reason);
        snprintf(error, error_size, "%s: %s", what, reason);
    } else if (errno != 0) {
        snprintf(error, error_size, "%s: %s", what, strerror(errno));
    } else {
        snprintf(error, error_size, "%s", what);
    }
    ERR_clear_error();
}

ctls_context *ctls_context_new(const char *ca_file, const char *cert_file, const char *key_file, char *error,
                               size_t error_size) {
    ERR_clear_error();
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (ctx == NULL) {
        describe(error, error_size, "cannot create a TLS context");
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    int loaded = ca_file != NULL ? SSL_CTX_load_verify_locations(ctx, ca_file, NULL)
                                 : SSL_CTX_set_default_verify_paths(ctx);
    if (loaded != 1) {
        char what[512];
        snprintf(what, sizeof what, "cannot load the CA certificate %s", ca_file != NULL ? ca_file : "(system)");
        describe(error, error_size, what);
        SSL_CTX_free(ctx);
        return NULL;
    }
    if (cert_file != NULL && key_file != NULL) {
        char what[512];
        if (SSL_CTX_use_certificate_chain_file(ctx, cert_file) != 1) {
            snprintf(what, sizeof what, "cannot load the client certificate %s", cert_file);
            describe(error, error_size, what);
            SSL_CTX_free(ctx);
            return NULL;
        }
        if (SSL_CTX_use_PrivateKey_file(ctx, key_file, SSL_FILETYPE_PEM) != 1) {
            snprintf(what, sizeof what, "cannot load the client key %s", key_file);
            describe(error, error_size, what);
            SSL_CTX_free(ctx);
            return NULL;
        }
        if (SSL_CTX_check_private_key(ctx) != 1) {
            snprintf(what, sizeof what, "the client key %s does not match the certificate %s", key_file, cert_file);
            describe(error, error_size, what);
            SSL_CTX_free(ctx);
            return NULL;
        }
    }
    struct ctls_context *context = calloc(1, sizeof *context);
    context->ctx = ctx;
    return context;
}

void ctls_context_free(ctls_context *context) {
    if (context == NULL) return;
    SSL_CTX_free(context->ctx);
    free(context);
}

ctls_session *ctls_connect(ctls_context *context, int fd, const char *host, char *error, size_t error_size) {
    ERR_clear_error();
    errno = 0;
    SSL *ssl = SSL_new(context->ctx);
    if (ssl == NULL) {
        describe(error, error_size, "cannot create a TLS session");
        return NULL;
    }
    // An IP literal is checked against the certificate's IP SANs, a name against its DNS names (and sent as SNI).
    X509_VERIFY_PARAM *param = SSL_get0_param(ssl);
    if (X509_VERIFY_PARAM_set1_ip_asc(param, host) != 1) {
        SSL_set_tlsext_host_name(ssl, host);
        SSL_set1_host(ssl, host);
    }
    SSL_set_fd(ssl, fd);
    if (SSL_connect(ssl) != 1) {
        long verify = SSL_get_verify_result(ssl);
        if (verify != X509_V_OK) {
            snprintf(error, error_size, "TLS handshake with %s failed: certificate verification: %s", host,
                     X509_verify_cert_error_string(verify));
            ERR_clear_error();
        } else {
            char what[512];
            snprintf(what, sizeof what, "TLS handshake with %s failed", host);
            describe(error, error_size, what);
        }
        SSL_free(ssl);
        return NULL;
    }
    struct ctls_session *session = calloc(1, sizeof *session);
    session->ssl = ssl;
    return session;
}

int ctls_write_all(ctls_session *session, const void *bytes, size_t length, char *error, size_t error_size) {
    const char *cursor = bytes;
    while (length > 0) {
        ERR_clear_error();
        errno = 0;
        int chunk = length > 1 << 30 ? 1 << 30 : (int)length;
        int written = SSL_write(session->ssl, cursor, chunk);
        if (written <= 0) {
            describe(error, error_size, "TLS write failed");
            return -1;
        }
        cursor += written;
        length -= (size_t)written;
    }
    return 0;
}

ssize_t ctls_read(ctls_session *session, void *buffer, size_t capacity, char *error, size_t error_size) {
    ERR_clear_error();
    errno = 0;
    int chunk = capacity > 1 << 30 ? 1 << 30 : (int)capacity;
    int count = SSL_read(session->ssl, buffer, chunk);
    if (count > 0) return count;
    int reason = SSL_get_error(session->ssl, count);
    if (reason == SSL_ERROR_ZERO_RETURN) return 0;
    if (reason == SSL_ERROR_SYSCALL && errno == 0) return 0;  // the peer closed without close_notify
    if (reason == SSL_ERROR_WANT_READ || reason == SSL_ERROR_WANT_WRITE) errno = EAGAIN;
    describe(error, error_size, "TLS read failed");
    return -1;
}

int ctls_pending(ctls_session *session) { return SSL_pending(session->ssl) > 0; }

void ctls_session_free(ctls_session *session) {
    if (session == NULL) return;
    SSL_free(session->ssl);
    free(session);
}
