/*
 * io.h: completion-based I/O.  Submit an operation with a callback; when the
 * kernel completes it, the callback runs on a worker as an ordinary task (it
 * may spawn, acquire components and submit more I/O).
 *
 * Backends: io_uring (one ring per worker, created on the worker's first
 * submission) or, when io_uring is missing or forbidden (EPERM/ENOSYS:
 * seccomp, kernel.io_uring_disabled, old kernels) or weft_config.io / env
 * WEFT_IO=threads asks for it, helper threads (poll(2) for sockets and
 * timeouts, blocking syscalls for files).  The API and its guarantees are
 * the same on both.
 *
 * Contract of every submit call:
 *   - Returns a handle > 0 (for weft_io_cancel) or a negative errno.  On
 *     success the callback runs exactly once, with what the kernel's
 *     completion says: a result >= 0 or -errno (-ECANCELED when cancelled,
 *     including at weft_destroy).  On failure it never runs.
 *   - Buffers, iovec arrays, paths, addresses and length pointers belong to
 *     the caller and must stay valid until the callback has started.
 *   - NULL callback, NULL rt, or a buffer that is NULL with a length > 0:
 *     -EINVAL.  Once weft_destroy has begun: -ESHUTDOWN.  A negative fd is
 *     refused with -EBADF; a closed or otherwise bad fd >= 0 is reported
 *     to the callback (-EBADF).
 *   - From a worker the operation goes to that worker's ring without locks;
 *     from any other thread it is handed to a worker through the node's
 *     injection queue.
 */
#ifndef WEFT_IO_H
#define WEFT_IO_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <weft/export.h>
#include <weft/runtime.h>

WEFT_BEGIN_DECLS

/* res: what the completion says, >= 0 or -errno. */
typedef void (*weft_io_fn)(int res, void *ctx);

/* An offset meaning "the file's current position" (pipes, sockets, ttys). */
#define WEFT_IO_CUR UINT64_MAX

/* weft_io_fsync flags. */
#define WEFT_IO_DATASYNC 1u

/* res: bytes transferred. */
WEFT_API int weft_io_read(weft_rt *rt, int fd, void *buf, size_t len, uint64_t off, weft_io_fn fn, void *ctx);
WEFT_API int weft_io_write(weft_rt *rt, int fd, const void *buf, size_t len, uint64_t off, weft_io_fn fn,
			   void *ctx);
/* iovcnt at most IOV_MAX. */
WEFT_API int weft_io_readv(weft_rt *rt, int fd, const struct iovec *iov, unsigned iovcnt, uint64_t off,
			   weft_io_fn fn, void *ctx);
WEFT_API int weft_io_writev(weft_rt *rt, int fd, const struct iovec *iov, unsigned iovcnt, uint64_t off,
			    weft_io_fn fn, void *ctx);
/* flags: 0 or WEFT_IO_DATASYNC.  res: 0. */
WEFT_API int weft_io_fsync(weft_rt *rt, int fd, unsigned flags, weft_io_fn fn, void *ctx);
/* res: the new fd (close it yourself). */
WEFT_API int weft_io_openat(weft_rt *rt, int dirfd, const char *path, int flags, mode_t mode, weft_io_fn fn,
			    void *ctx);
WEFT_API int weft_io_close(weft_rt *rt, int fd, weft_io_fn fn, void *ctx);
/* Wait until fd is ready for events (POLLIN, POLLOUT, ...); res: the
 * events that are ready. */
WEFT_API int weft_io_poll(weft_rt *rt, int fd, unsigned events, weft_io_fn fn, void *ctx);
/* res: the accepted fd (close-on-exec).  addr and len may be NULL. */
WEFT_API int weft_io_accept(weft_rt *rt, int fd, struct sockaddr *addr, socklen_t *len, weft_io_fn fn, void *ctx);
/* res: 0 once connected. */
WEFT_API int weft_io_connect(weft_rt *rt, int fd, const struct sockaddr *addr, socklen_t len, weft_io_fn fn,
			     void *ctx);
/* res: bytes received (0: the peer closed) or sent. */
WEFT_API int weft_io_recv(weft_rt *rt, int fd, void *buf, size_t len, int flags, weft_io_fn fn, void *ctx);
WEFT_API int weft_io_send(weft_rt *rt, int fd, const void *buf, size_t len, int flags, weft_io_fn fn, void *ctx);
/* res: 0 when ns nanoseconds have passed (never earlier), -ECANCELED when
 * cancelled. */
WEFT_API int weft_io_timeout(weft_rt *rt, uint64_t ns, weft_io_fn fn, void *ctx);

/* Ask for the operation `handle` (a submit's return value) to be
 * cancelled.  0: asked; its callback still runs exactly once, with
 * -ECANCELED if the cancellation won or with its real result if the
 * operation completed first (or was already running where it cannot be
 * stopped, such as a regular file read on a helper thread).  -ENOENT: the
 * operation has already completed, or handle never named one.  -EINVAL:
 * handle <= 0 or rt NULL.  -ESHUTDOWN: called from a thread that is not a
 * worker once weft_destroy has begun (it cancels everything in flight
 * itself); a call already under way then is waited for. */
WEFT_API int weft_io_cancel(weft_rt *rt, int handle);

/* Which backend and park mechanism a runtime uses (also in weft_stats). */
enum weft_io_backend { WEFT_IO_AUTO = 0, WEFT_IO_URING = 1, WEFT_IO_THREADS = 2 };
enum weft_io_park {
	WEFT_IO_PARK_AUTO = 0,
	WEFT_IO_PARK_FUTEX_OP = 1, /* IORING_OP_FUTEX_WAIT on the park word (kernel >= 6.7) */
	WEFT_IO_PARK_EVENTFD = 2,  /* an eventfd read kept armed on the ring */
	WEFT_IO_PARK_POLL = 3,     /* plain futex park, waking every ms to look at the ring */
};
WEFT_API int weft_io_backend(const weft_rt *rt);
WEFT_API int weft_io_park_mechanism(const weft_rt *rt);

WEFT_END_DECLS

#endif
