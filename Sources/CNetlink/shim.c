#define _GNU_SOURCE
#include <sched.h>
#include <sys/socket.h>
#include "CNetlink.h"

int cnl_setns(int fd, int nstype) { return setns(fd, nstype); }

int cnl_accept_cloexec(int fd) { return accept4(fd, NULL, NULL, SOCK_CLOEXEC); }

int cnl_peer_credentials(int fd, unsigned int *uid, int *pid) {
    struct ucred credentials;
    socklen_t size = sizeof(credentials);
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &credentials, &size) != 0) return -1;
    *uid = credentials.uid;
    *pid = credentials.pid;
    return 0;
}
