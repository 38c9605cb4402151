#ifndef TANDEM_CNETLINK_H
#define TANDEM_CNETLINK_H

// Kernel UAPI headers Swift's Glibc module does not expose (sockaddr_nl, the netlink socket options), and the
// call Glibc declares only under _GNU_SOURCE. _GNU_SOURCE stays out of this header: defining it here
// changes fd_set for every Swift importer.
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <sys/vfs.h>

/// CLONE_NEWNET (sched.h declares it only under _GNU_SOURCE).
static const int CNL_CLONE_NEWNET = 0x40000000;

/// setns(2): moves the calling thread into the namespace `fd` refers to.
int cnl_setns(int fd, int nstype);

/// accept4(2) with SOCK_CLOEXEC: a connection not inherited by plugins the agent runs.
int cnl_accept_cloexec(int fd);

/// The connected peer's user and process IDs (getsockopt SO_PEERCRED); 0 on success, -1 with errno.
int cnl_peer_credentials(int fd, unsigned int *uid, int *pid);

/// unshare(2).
int cnl_unshare(int flags);

/// mount --bind SOURCE TARGET.
int cnl_bind_mount(const char *source, const char *target);

/// mount --make-rshared TARGET, after binding TARGET onto itself when it is not a mount point yet.
int cnl_make_shared(const char *target);

/// umount -l TARGET.
int cnl_detach_unmount(const char *target);

/// posix_spawn_file_actions_addclosefrom_np: the child closes every descriptor from `lowest` up.
int cnl_spawn_close_from(void *actions, int lowest);

/// pipe2(fds, O_CLOEXEC): a pipe no child inherits unless it is handed over explicitly.
int cnl_pipe_cloexec(int fds[2]);

#endif
