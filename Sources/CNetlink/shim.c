#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>
#include <sched.h>
#include <spawn.h>
#include <sys/mount.h>
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

int cnl_unshare(int flags) { return unshare(flags); }

int cnl_bind_mount(const char *source, const char *target) { return mount(source, target, "none", MS_BIND, NULL); }

int cnl_make_shared(const char *target) {
    if (mount("", target, "none", MS_SHARED | MS_REC, NULL) == 0) return 0;
    if (errno != EINVAL) return -1;
    // Not a mount point yet: bind it onto itself first, as `ip netns add` does.
    if (mount(target, target, "none", MS_BIND | MS_REC, NULL) != 0) return -1;
    return mount("", target, "none", MS_SHARED | MS_REC, NULL);
}

int cnl_detach_unmount(const char *target) { return umount2(target, MNT_DETACH); }

int cnl_spawn_close_from(void *actions, int lowest) {
    return posix_spawn_file_actions_addclosefrom_np((posix_spawn_file_actions_t *)actions, lowest);
}

int cnl_pipe_cloexec(int fds[2]) { return pipe2(fds, O_CLOEXEC); }
