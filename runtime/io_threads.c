/*
 * io_threads.c: the helper-thread I/O backend (the io_threads_* functions
 * at the bottom of io.h), used when io_uring is missing or forbidden, or
 * when weft_config.io / WEFT_IO asks for threads.  It owns one poller
 * thread, IOT_HELPERS blocking helper threads, an eventfd, and every op
 * between io_threads_submit and the io_complete call that hands it back.
 *
 * Overview
 *
 * Where an op goes (decided in io_threads_submit):
 *   poller   IOP_POLL, IOP_ACCEPT, IOP_RECV, IOP_SEND, IOP_TIMEOUT; an
 *            IOP_CONNECT on an O_NONBLOCK socket; IOP_READ/WRITE/READV/
 *            WRITEV at WEFT_IO_CUR on a file that is not a regular file,
 *            block device or directory (pipes, sockets, ttys, eventfds...).
 *   helpers  everything else: file reads and writes (pread/pwrite, or
 *            read/write at WEFT_IO_CUR), fsync/fdatasync, openat, close,
 *            and connect on a blocking socket.
 * Sending pollable reads and writes to the poller (instead of a blocking
 * read on a helper) is what keeps a read on an idle pipe cancellable and
 * lets weft_destroy finish, as with io_uring.
 *
 * On a pipe or socket the offset of a read or write is ignored, as
 * io_uring does for stream files (pread there would give ESPIPE).
 *
 * The poller sleeps in ppoll(2) on the eventfd (new ops, cancels,
 * shutdown) plus one entry per distinct fd among its waiting ops (the
 * events of several ops on one fd are OR'ed, so a recv and a send on one
 * socket share an entry and the array never outgrows RLIMIT_NOFILE), with
 * the earliest IOP_TIMEOUT deadline as its timeout (ns precision).  Like
 * io_uring, it tries each new op once at once (so data already there
 * costs no wait, and ENOTSOCK and the like come at once), and again each
 * time the op's fd is ready, without blocking: recv/send with
 * MSG_DONTWAIT, preadv2/pwritev2 at the current position with RWF_NOWAIT,
 * accept4(SOCK_CLOEXEC) on an O_NONBLOCK listener, connect then SO_ERROR.
 * EAGAIN puts the op back to waiting.  IOP_POLL completes
 * with the ready events (those asked for plus POLLERR/POLLHUP; POLLNVAL
 * gives -EBADF, as io_uring's bad-fd result).  IOP_TIMEOUT completes with
 * 0 once CLOCK_MONOTONIC >= submit time + ns, never earlier.  An op with a
 * negative fd gets -EBADF (poll(2) would silently ignore it).
 *
 * Calls that could block the poller go to a helper "gated": the helper
 * checks readiness again with poll(fd, 0) right before the call, and if
 * the fd is not ready the op goes back to the poller.  That is:
 *   - accept on a listener without O_NONBLOCK.  Another thread or process
 *     may take the connection between the check and accept4; then that
 *     helper blocks until the next connection arrives (what a blocking
 *     accept means), but the poller, timeouts and every other socket op
 *     go on.  Make listeners O_NONBLOCK to avoid even that.
 *   - a read or write at WEFT_IO_CUR on a file that refuses RWF_NOWAIT
 *     (ttys: EOPNOTSUPP).  The write may block until all is written.
 * A connect on a blocking socket also runs on a helper and cannot be
 * cancelled once started (-EALREADY); an O_NONBLOCK socket's connect
 * waits in the poller and can.
 *
 * recv/send with MSG_WAITALL on a stream or seqpacket socket keep waiting
 * after a partial transfer, as io_uring does; the bytes done so far are
 * kept in aux[1]'s top half and returned if an error, EOF or a cancel
 * ends the op (a cancel after some data moved reports the count, not
 * -ECANCELED, so no received byte is lost).  A single buffer is capped at
 * IOT_MAX_RW bytes per op (the kernel's MAX_RW_COUNT), so results fit an
 * int.
 *
 * Cancel (io_threads_cancel), under the lock: an op whose sg word is not
 * the caller's any more (completed, maybe reused) is left alone: -ENOENT.
 * Otherwise, by the op's state:
 *   ST_INCOMING / ST_WAITING / ST_PBUSY   F_CANCEL is set and the poller
 *       is kicked; the poller completes it with -ECANCELED at its next
 *       pass, or with the real result if its non-blocking syscall (in
 *       progress, ST_PBUSY) succeeded.  Returns 0.
 *   ST_QUEUED    unlinked from the helper queue and completed with
 *       -ECANCELED by the caller, after the lock.  Returns 0.
 *   ST_RUNNING   a helper is in the syscall: -EALREADY, it completes
 *       normally.  F_CANCEL is still set, so a gated op whose readiness
 *       check fails is cancelled instead of going back to waiting.
 *   ST_DONE of this generation   completed, io_complete is due: 0.
 *   anything else   the op is OP_INFLIGHT but io.c has not called
 *       io_threads_submit yet (it stores OP_INFLIGHT first): aux[1]
 *       becomes ST_PRECANCEL with the generation, and submit turns that
 *       into F_CANCEL, so this cancel is not lost.  Returns 0.
 *
 * Shutdown (io_threads_shutdown) sets `shutdown` and kicks the poller,
 * which then completes every op it holds with -ECANCELED (and every op
 * that reaches it later: submissions racing with shutdown are routed to
 * the poller whatever their kind, so none is lost or run late).  In the
 * helper queue, ops that wait for something outside (gated ops, connect)
 * are cancelled at once; queued file ops (read, write, fsync, openat,
 * close) still run, as their io_uring counterparts would, and ops already
 * in a syscall finish normally.  io_threads_stop shuts down too (harmless
 * twice), then sets `stop`: helpers leave when the queue is empty, the
 * poller when it holds nothing; then it joins them and frees everything.
 *
 * Invariants
 *  - t->lock guards `shutdown`, `stop`, `kicked`, the incoming list, the
 *    helper queue, and aux[1] of every op (only this file writes aux[1],
 *    and io.c never does).  aux[1] is state | flags | high half, where
 *    the high half is the bytes done (MSG_WAITALL) while the op is ours
 *    and its generation in ST_DONE / ST_PRECANCEL.  For ops in
 *    ST_INCOMING/ST_WAITING/ST_PBUSY only the poller changes aux[1],
 *    except for F_CANCEL, which cancel may add at any time (the poller
 *    merges it and never clears it).
 *  - aux[0] is the deadline of a waiting IOP_TIMEOUT, the prev link of a
 *    queued op, and the result of an op on a local "done" list; each use
 *    belongs to whoever holds the op in that state.  op->next links the
 *    incoming list, the helper queue and done lists (one at a time).
 *  - The poller's arrays (struct poller) are touched by the poller thread
 *    only.  An op in the `ops` array (ST_WAITING) or in `busy` (ST_PBUSY)
 *    leaves our hands only through the poller itself, so the poller may
 *    read its fields (fd, opcode, addr, len, flags, off: fixed while the
 *    op is in flight) without the lock; so may a helper with its
 *    ST_RUNNING op.
 *  - Exactly one completion: an op leaves this backend only through
 *    finish() or a helper's or cancel's own completion, each under the
 *    lock, which set aux[1] to ST_DONE first; every path that takes an op
 *    out of a list or a state does so under the lock, so a cancel, a
 *    shutdown and a normal completion cannot all take it.  io_complete is
 *    called after unlocking, and nothing reads or writes an op after it
 *    (done lists read op->next and the result first).
 *  - No op is lost: submit puts every op on the incoming list or the
 *    helper queue (no allocation, cannot fail).  The poller takes incoming
 *    ops at each pass (when its arrays cannot grow, the rest stay on the
 *    list and it retries every IOT_RETRY_NS); a helper's op that is not
 *    ready goes back to incoming.  Kicks: a thread that adds work for the
 *    poller sets `kicked` under the lock and, if it was clear, writes the
 *    eventfd after unlocking; the poller clears `kicked` under the lock in
 *    the same critical section where it takes the incoming list and reads
 *    F_CANCEL and `shutdown`, so anything added after that section finds
 *    `kicked` clear and wakes the next ppoll.  Helpers sleep on `work`,
 *    signalled under the lock for every queued op.
 *  - No thread spins: the poller blocks in ppoll, helpers in the condvar
 *    or their syscall.  The threads run with every signal blocked, so
 *    process signals go to application threads (and a send to a closed
 *    socket gives EPIPE without a SIGPIPE that kills the process).
 *
 * Atomics: every shared field of ours is guarded by t->lock, and the op
 * fields io.c wrote before io_threads_submit reach our threads through
 * that lock.  op->sg (io.c's word) is only read, relaxed: see op_gen() and
 * io_threads_cancel.  io_threads_start publishes *out with a release
 * store, for io.c's lock-free acquire load of it.
 */
#include "io.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "atomics.h"

#define IOT_HELPERS 2
#define IOT_MAX_RW 0x7ffff000u          /* MAX_RW_COUNT with 4 KiB pages */
#define IOT_RETRY_NS 10000000ull        /* 10 ms: after an allocation or ppoll failure */
#define IOT_MAX_SLEEP_NS 86400000000000ull /* one day: longer deadlines are re-armed */
#define IOT_FDMAP_MAX (1u << 20)        /* fds merged through the map (8 MiB at most) */

/* What an attempt asks for besides a result. */
#define ATTEMPT_WAIT (-0x40000001)      /* not ready: wait in the poller */
#define ATTEMPT_HELPER (-0x40000002)    /* would block: gated, on a helper */

/* aux[1] while an op is ours: state | flags | (bytes done << 32). */
enum {
	ST_NONE = 0,  /* never submitted here */
	ST_INCOMING,  /* on the incoming list, for the poller */
	ST_WAITING,   /* in the poller's ops array */
	ST_PBUSY,     /* the poller is trying its syscall */
	ST_QUEUED,    /* in the helper queue */
	ST_RUNNING,   /* a helper is in its syscall */
	ST_DONE,      /* completed: high half is the generation it had */
	ST_PRECANCEL, /* cancelled before it reached us: high half = generation */
};
#define ST_MASK 0xfu
#define F_CANCEL 0x10u     /* io_threads_cancel asked */
#define F_GATED 0x20u      /* on a helper: poll(fd, 0) first, back to the poller if not ready */
#define F_FRESH 0x40u      /* poller: try once before waiting for readiness */
#define F_CONNECTING 0x80u /* connect said EINPROGRESS: wait for POLLOUT, then SO_ERROR */

/* A ready op the poller tries outside the lock. */
struct busy {
	struct io_op *op;
	uint32_t fl;   /* aux[1]'s flags when it was taken (F_CANCEL excluded) */
	uint32_t done; /* bytes done so far (MSG_WAITALL) */
	short rev;     /* its ready events */
	int res;       /* result, ATTEMPT_WAIT or ATTEMPT_HELPER */
};

/* The poller thread's own arrays. */
struct poller {
	struct io_op **ops; /* waiting ops, oldest first */
	short *rev;         /* ops[i]'s ready events from the last ppoll (i < nrev) */
	uint32_t *slot;     /* ops[i]'s entry in pfd, 0 for none (a timeout) */
	struct busy *busy;
	struct pollfd *pfd; /* [0]: the eventfd; then one per distinct fd */
	size_t n, cap, nrev, npfd;
	uint64_t *fdmap;    /* fd -> (stamp << 32 | pfd slot) for this pass */
	size_t fdmap_len;
	uint32_t stamp;
};

struct io_threads {
	struct weft_rt *rt;
	int efd;
	pthread_mutex_t lock;
	pthread_cond_t work; /* helpers: the queue is not empty, or stop */

	/* Under lock. */
	bool shutdown;
	bool stop;
	bool kicked;               /* the eventfd was (or is about to be) written */
	struct io_op *in_head;     /* for the poller, FIFO through ->next */
	struct io_op *in_tail;
	size_t nin;
	struct io_op *q_head;      /* for the helpers: ->next, prev in aux[0] */
	struct io_op *q_tail;

	/* Written once by start / the poller thread. */
	struct poller p;
	pthread_t poller;
	bool poller_started;
	unsigned nhelpers;
	pthread_t helpers[IOT_HELPERS];
};

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static unsigned iot_state(const struct io_op *op)
{
	return (unsigned)op->aux[1] & ST_MASK;
}

/* The op's generation (sg >> 8).  relaxed: called only by the thread that
 * holds the op while it is OP_INFLIGHT (its submitter, or one of ours
 * after taking it through t->lock), when sg cannot change. */
static uint32_t op_gen(const struct io_op *op)
{
	return load_relaxed(&op->sg) >> 8;
}

/* aux[1] for an op that is not ours any more. */
static uint64_t done_word(const struct io_op *op)
{
	return (uint64_t)op_gen(op) << 32 | ST_DONE;
}

static void set_state(struct io_op *op, unsigned st)
{
	op->aux[1] = (op->aux[1] & ~(uint64_t)ST_MASK) | st;
}

static uint32_t cap_len(uint32_t len)
{
	return len < IOT_MAX_RW ? len : IOT_MAX_RW;
}

/* The readiness an op waits for. */
static short op_events(const struct io_op *op)
{
	switch (op->opcode) {
	case IOP_POLL:
		return (short)op->flags;
	case IOP_ACCEPT:
	case IOP_RECV:
	case IOP_READ:
	case IOP_READV:
		return POLLIN;
	case IOP_SEND:
	case IOP_CONNECT:
	case IOP_WRITE:
	case IOP_WRITEV:
		return POLLOUT;
	default:
		return 0;
	}
}

/* ---- lists (under lock) ---- */

/* Hand op to a done list: it is no longer ours once the lock is dropped. */
static void finish(struct io_op *op, int res, struct io_op ***tail)
{
	op->aux[1] = done_word(op); /* a late cancel does nothing */
	op->aux[0] = (uint32_t)res;
	op->next = NULL;
	**tail = op;
	*tail = &op->next;
}

/* Call io_complete for every op of a done list (lock not held). */
static void complete_list(struct io_threads *t, struct io_op *op)
{
	while (op) {
		struct io_op *next = op->next;
		int res = (int)(uint32_t)op->aux[0];
		io_complete(t->rt, op, res); /* op is not ours any more */
		op = next;
	}
}

/* Mark that the poller must look again; true if the caller must write the
 * eventfd (after unlocking). */
static bool need_kick(struct io_threads *t)
{
	if (t->kicked)
		return false;
	t->kicked = true;
	return true;
}

static void kick_poller(struct io_threads *t)
{
	/* Cannot fail short of the counter reaching 2^64 - 1. */
	(void)eventfd_write(t->efd, 1);
}

static void incoming_push(struct io_threads *t, struct io_op *op)
{
	set_state(op, ST_INCOMING);
	op->next = NULL;
	if (t->in_tail)
		t->in_tail->next = op;
	else
		t->in_head = op;
	t->in_tail = op;
	t->nin++;
}

static struct io_op *q_prev(const struct io_op *op)
{
	return (struct io_op *)(uintptr_t)op->aux[0];
}

static void queue_push(struct io_threads *t, struct io_op *op, bool front)
{
	set_state(op, ST_QUEUED);
	if (front) {
		op->next = t->q_head;
		op->aux[0] = 0;
		if (t->q_head)
			t->q_head->aux[0] = (uintptr_t)op;
		else
			t->q_tail = op;
		t->q_head = op;
	} else {
		op->next = NULL;
		op->aux[0] = (uintptr_t)t->q_tail;
		if (t->q_tail)
			t->q_tail->next = op;
		else
			t->q_head = op;
		t->q_tail = op;
	}
	pthread_cond_signal(&t->work);
}

static void queue_unlink(struct io_threads *t, struct io_op *op)
{
	struct io_op *prev = q_prev(op), *next = op->next;
	if (prev)
		prev->next = next;
	else
		t->q_head = next;
	if (next)
		next->aux[0] = (uintptr_t)prev;
	else
		t->q_tail = prev;
	op->next = NULL;
}

/* ---- the poller ---- */

static bool poller_grow(struct poller *p, size_t need)
{
	if (need <= p->cap)
		return true;
	size_t cap = p->cap ? p->cap * 2 : 64;
	while (cap < need)
		cap *= 2;
	/* Each array is replaced as soon as it has grown, so a failure part
	 * way leaves larger arrays and the old cap: still consistent. */
	void *q;
	if (!(q = realloc(p->ops, cap * sizeof *p->ops)))
		return false;
	p->ops = q;
	if (!(q = realloc(p->rev, cap * sizeof *p->rev)))
		return false;
	p->rev = q;
	if (!(q = realloc(p->slot, cap * sizeof *p->slot)))
		return false;
	p->slot = q;
	if (!(q = realloc(p->busy, cap * sizeof *p->busy)))
		return false;
	p->busy = q;
	if (!(q = realloc(p->pfd, (cap + 1) * sizeof *p->pfd)))
		return false;
	p->pfd = q;
	p->cap = cap;
	return true;
}

/* A new pfd entry for fd. */
static uint32_t pfd_new(struct poller *p, int fd, short events)
{
	uint32_t s = (uint32_t)p->npfd++; /* pfd has room for one per op */
	p->pfd[s] = (struct pollfd){ .fd = fd, .events = events };
	return s;
}

/* The pfd entry for fd in this pass, shared by every op on fd (through
 * fdmap; an fd the map cannot hold, such as a bogus 1 << 30, gets an entry
 * of its own). */
static uint32_t pfd_slot(struct poller *p, int fd, short events)
{
	if ((size_t)fd >= IOT_FDMAP_MAX)
		return pfd_new(p, fd, events);
	if ((size_t)fd >= p->fdmap_len) {
		size_t len = p->fdmap_len ? p->fdmap_len * 2 : 256;
		while (len <= (size_t)fd)
			len *= 2;
		uint64_t *m = realloc(p->fdmap, len * sizeof *m);
		if (!m)
			return pfd_new(p, fd, events);
		memset(m + p->fdmap_len, 0, (len - p->fdmap_len) * sizeof *m);
		p->fdmap = m;
		p->fdmap_len = len;
	}
	uint64_t e = p->fdmap[fd];
	if ((uint32_t)(e >> 32) == p->stamp) {
		p->pfd[(uint32_t)e].events |= events;
		return (uint32_t)e;
	}
	uint32_t s = pfd_new(p, fd, events);
	p->fdmap[fd] = (uint64_t)p->stamp << 32 | s;
	return s;
}

static bool stream_socket(int fd)
{
	int type = 0;
	socklen_t len = sizeof type;
	if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0)
		return false;
	return type == SOCK_STREAM || type == SOCK_SEQPACKET;
}

static bool again(int e)
{
	return e == EAGAIN || e == EWOULDBLOCK || e == EINTR;
}

/* recv/send: one non-blocking call; MSG_WAITALL keeps going on streams. */
static void attempt_msg(struct busy *b)
{
	struct io_op *op = b->op;
	uint32_t len = cap_len(op->len);
	char *buf = (char *)op->addr + b->done;
	ssize_t r;
	if (op->opcode == IOP_RECV)
		r = recv(op->fd, buf, len - b->done, (int)op->flags | MSG_DONTWAIT);
	else
		r = send(op->fd, buf, len - b->done, (int)op->flags | MSG_DONTWAIT);
	if (r < 0) {
		/* The caller's own MSG_DONTWAIT means "do not wait": -EAGAIN,
		 * as io_uring answers. */
		if (again(errno) && !(op->flags & MSG_DONTWAIT))
			b->res = ATTEMPT_WAIT;
		else
			b->res = b->done ? (int)b->done : -errno;
		return;
	}
	b->done += (uint32_t)r;
	if (r > 0 && b->done < len && (op->flags & MSG_WAITALL) && stream_socket(op->fd))
		b->res = ATTEMPT_WAIT;
	else
		b->res = (int)b->done;
}

static int attempt_connect(struct busy *b)
{
	struct io_op *op = b->op;
	if (b->fl & F_CONNECTING) {
		int err = 0;
		socklen_t len = sizeof err;
		if (getsockopt(op->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
			return -errno;
		if (err)
			return -err;
	}
	/* First call, or again after readiness (as io_uring does): 0 or
	 * EISCONN once connected, EALREADY/EINPROGRESS while under way. */
	if (connect(op->fd, (const struct sockaddr *)op->addr, (socklen_t)op->off) == 0)
		return 0;
	int e = errno;
	if (e == EISCONN && (b->fl & F_CONNECTING))
		return 0;
	if (e == EINPROGRESS || ((e == EALREADY || e == EINTR) && (b->fl & F_CONNECTING))) {
		b->fl |= F_CONNECTING;
		return ATTEMPT_WAIT;
	}
	return -e;
}

/* Reads and writes at the current position of a pollable file. */
static int attempt_rw(struct io_op *op)
{
	struct iovec one = { .iov_base = op->addr, .iov_len = cap_len(op->len) };
	const struct iovec *iov = &one;
	int cnt = 1;
	if (op->opcode == IOP_READV || op->opcode == IOP_WRITEV) {
		iov = op->addr;
		cnt = (int)op->len;
	}
	ssize_t r;
	if (op->opcode == IOP_READ || op->opcode == IOP_READV)
		r = preadv2(op->fd, iov, cnt, -1, RWF_NOWAIT);
	else
		r = pwritev2(op->fd, iov, cnt, -1, RWF_NOWAIT);
	if (r >= 0)
		return (int)r; /* the kernel caps a call at MAX_RW_COUNT */
	if (again(errno))
		return ATTEMPT_WAIT;
	if (errno == EOPNOTSUPP || errno == ENOSYS)
		return ATTEMPT_HELPER; /* no RWF_NOWAIT here (ttys): gated */
	return -errno;
}

static void attempt(struct busy *b)
{
	struct io_op *op = b->op;
	switch (op->opcode) {
	case IOP_RECV:
	case IOP_SEND:
		attempt_msg(b);
		return;
	case IOP_ACCEPT: {
		int fl = fcntl(op->fd, F_GETFL);
		if (fl < 0) {
			b->res = -errno;
		} else if (!(fl & O_NONBLOCK)) {
			/* accept4 could block: gated, once poll says ready. */
			b->res = b->rev ? ATTEMPT_HELPER : ATTEMPT_WAIT;
		} else {
			int r = accept4(op->fd, (struct sockaddr *)op->addr, (socklen_t *)op->addr2, SOCK_CLOEXEC);
			b->res = r >= 0 ? r : again(errno) ? ATTEMPT_WAIT : -errno;
		}
		return;
	}
	case IOP_CONNECT:
		b->res = attempt_connect(b);
		return;
	case IOP_READ:
	case IOP_WRITE:
	case IOP_READV:
	case IOP_WRITEV:
		b->res = attempt_rw(op);
		return;
	default:
		b->res = -EINVAL; /* never routed here */
		return;
	}
}

/* Try the ready ops (lock not held), then settle each under the lock. */
static void run_busy(struct io_threads *t, size_t nb)
{
	struct poller *p = &t->p;
	struct io_op *done = NULL, **dtail = &done;

	for (size_t i = 0; i < nb; i++)
		attempt(&p->busy[i]);

	pthread_mutex_lock(&t->lock);
	for (size_t i = 0; i < nb; i++) {
		struct busy *b = &p->busy[i];
		struct io_op *op = b->op;
		bool cancel = (op->aux[1] & F_CANCEL) || t->shutdown;
		op->aux[1] = (uint64_t)b->done << 32 | (b->fl & ~(ST_MASK | F_CANCEL)) | (op->aux[1] & F_CANCEL);
		if (b->res == ATTEMPT_WAIT) {
			if (cancel) {
				finish(op, b->done ? (int)b->done : -ECANCELED, &dtail);
			} else {
				set_state(op, ST_WAITING);
				p->ops[p->n++] = op; /* room: it came from ops */
			}
		} else if (b->res == ATTEMPT_HELPER) {
			if (cancel) {
				finish(op, -ECANCELED, &dtail);
			} else {
				op->aux[1] |= F_GATED;
				queue_push(t, op, true); /* ready now: ahead of file ops */
			}
		} else {
			finish(op, b->res, &dtail);
		}
	}
	pthread_mutex_unlock(&t->lock);
	complete_list(t, done);
}

static void *poller_main(void *arg)
{
	struct io_threads *t = arg;
	struct poller *p = &t->p;
	bool drain = false;

	pthread_setname_np(pthread_self(), "weft-io-poll");
	for (;;) {
		struct io_op *done = NULL, **dtail = &done;
		uint64_t deadline = UINT64_MAX;
		bool retry = false, leave;
		size_t nb = 0;

		pthread_mutex_lock(&t->lock);
		if (drain) {
			eventfd_t v;
			(void)eventfd_read(t->efd, &v); /* EFD_NONBLOCK */
		}
		t->kicked = false;
		/* Take new ops, as many as the arrays can hold. */
		if (t->in_head && !poller_grow(p, p->n + t->nin))
			retry = true;
		while (t->in_head && p->n < p->cap) {
			struct io_op *op = t->in_head;
			t->in_head = op->next;
			if (!t->in_head)
				t->in_tail = NULL;
			t->nin--;
			set_state(op, ST_WAITING);
			p->ops[p->n++] = op;
		}

		/* Sweep: finish, take for an attempt, or keep (rebuilding pfd). */
		bool sd = t->shutdown;
		uint64_t now = now_ns();
		if (++p->stamp == 0) {
			memset(p->fdmap, 0, p->fdmap_len * sizeof *p->fdmap);
			p->stamp = 1;
		}
		p->pfd[0] = (struct pollfd){ .fd = t->efd, .events = POLLIN };
		p->npfd = 1;
		size_t j = 0;
		for (size_t i = 0; i < p->n; i++) {
			struct io_op *op = p->ops[i];
			short rev = i < p->nrev ? p->rev[i] : 0;
			uint32_t fl = (uint32_t)op->aux[1];
			uint32_t bytes = (uint32_t)(op->aux[1] >> 32);
			int res;
			if ((fl & F_CANCEL) || sd) {
				res = bytes ? (int)bytes : -ECANCELED;
			} else if (op->opcode == IOP_TIMEOUT) {
				if (now < op->aux[0]) {
					if (op->aux[0] < deadline)
						deadline = op->aux[0];
					p->slot[j] = 0;
					p->ops[j++] = op;
					continue;
				}
				res = 0;
			} else if (op->fd < 0) {
				res = -EBADF;
			} else if (op->opcode == IOP_POLL && rev) {
				res = (rev & POLLNVAL) ? -EBADF : (int)(unsigned short)rev;
			} else if (rev || (fl & F_FRESH)) {
				set_state(op, ST_PBUSY);
				p->busy[nb++] = (struct busy){
					.op = op, .fl = fl & ~(F_FRESH | F_CANCEL), .done = bytes, .rev = rev,
				};
				continue;
			} else {
				p->slot[j] = pfd_slot(p, op->fd, op_events(op));
				p->ops[j++] = op;
				continue;
			}
			finish(op, res, &dtail);
		}
		p->n = j;
		p->nrev = 0;
		leave = t->stop && !p->n && !nb && !t->in_head;
		pthread_mutex_unlock(&t->lock);

		complete_list(t, done);
		if (nb) {
			/* Ops put back to waiting need pfd entries: sweep again
			 * (no revents) before sleeping. */
			run_busy(t, nb);
			continue;
		}
		if (leave)
			break;

		struct timespec ts, *tsp = NULL;
		if (deadline != UINT64_MAX || retry) {
			uint64_t now2 = now_ns();
			uint64_t rel = deadline > now2 ? deadline - now2 : 0;
			if (rel > IOT_MAX_SLEEP_NS)
				rel = IOT_MAX_SLEEP_NS;
			if (retry && rel > IOT_RETRY_NS)
				rel = IOT_RETRY_NS;
			ts.tv_sec = (time_t)(rel / 1000000000u);
			ts.tv_nsec = (long)(rel % 1000000000u);
			tsp = &ts;
		}
		int r = ppoll(p->pfd, (nfds_t)p->npfd, tsp, NULL);
		drain = false;
		if (r > 0) {
			drain = p->pfd[0].revents != 0;
			for (size_t i = 0; i < p->n; i++) {
				struct io_op *op = p->ops[i];
				short want = (short)(op_events(op) | POLLERR | POLLHUP | POLLNVAL);
				p->rev[i] = p->slot[i] ? (short)(p->pfd[p->slot[i]].revents & want) : 0;
			}
			p->nrev = p->n;
		} else if (r < 0 && errno != EINTR) {
			/* ENOMEM, or more distinct fds than RLIMIT_NOFILE:
			 * nothing is ready that we know of; try again soon. */
			struct timespec pause = { 0, (long)IOT_RETRY_NS };
			nanosleep(&pause, NULL);
			drain = true;
		}
	}
	return NULL;
}

/* ---- the helpers ---- */

#define RETRY_EINTR(call)                                   \
	({                                                  \
		long r_;                                    \
		do                                          \
			r_ = (long)(call);                  \
		while (r_ < 0 && errno == EINTR);           \
		r_ < 0 ? -errno : (int)r_;                  \
	})

/* Run op's blocking syscall: >= 0, -errno, or ATTEMPT_WAIT (gated op not
 * ready: back to the poller). */
static int run_op(struct io_op *op, uint32_t fl)
{
	if (fl & F_GATED) {
		struct pollfd pfd = { .fd = op->fd, .events = op_events(op) };
		int r = poll(&pfd, 1, 0);
		if (r < 0)
			return errno == EINTR || errno == ENOMEM ? ATTEMPT_WAIT : -errno;
		if (r == 0)
			return ATTEMPT_WAIT;
		if (pfd.revents & POLLNVAL)
			return -EBADF;
	}
	bool cur = op->off == WEFT_IO_CUR;
	off_t off = (off_t)op->off;
	int res;
	switch (op->opcode) {
	case IOP_READ:
		res = cur ? RETRY_EINTR(read(op->fd, op->addr, cap_len(op->len)))
			  : RETRY_EINTR(pread(op->fd, op->addr, cap_len(op->len), off));
		break;
	case IOP_WRITE:
		res = cur ? RETRY_EINTR(write(op->fd, op->addr, cap_len(op->len)))
			  : RETRY_EINTR(pwrite(op->fd, op->addr, cap_len(op->len), off));
		break;
	case IOP_READV:
		res = cur ? RETRY_EINTR(readv(op->fd, op->addr, (int)op->len))
			  : RETRY_EINTR(preadv(op->fd, op->addr, (int)op->len, off));
		break;
	case IOP_WRITEV:
		res = cur ? RETRY_EINTR(writev(op->fd, op->addr, (int)op->len))
			  : RETRY_EINTR(pwritev(op->fd, op->addr, (int)op->len, off));
		break;
	case IOP_FSYNC:
		res = (op->flags & WEFT_IO_DATASYNC) ? RETRY_EINTR(fdatasync(op->fd)) : RETRY_EINTR(fsync(op->fd));
		break;
	case IOP_OPENAT:
		res = RETRY_EINTR(openat(op->fd, (const char *)op->addr, (int)op->flags, (mode_t)op->off));
		break;
	case IOP_CLOSE:
		/* Never retried: the fd is gone even on EINTR. */
		res = close(op->fd) < 0 ? -errno : 0;
		break;
	case IOP_CONNECT:
		/* Not retried on EINTR: the attempt goes on in the kernel. */
		res = connect(op->fd, (const struct sockaddr *)op->addr, (socklen_t)op->off) < 0 ? -errno : 0;
		break;
	case IOP_ACCEPT:
		res = RETRY_EINTR(accept4(op->fd, (struct sockaddr *)op->addr, (socklen_t *)op->addr2, SOCK_CLOEXEC));
		break;
	default:
		res = -EINVAL;
		break;
	}
	if ((fl & F_GATED) && (res == -EAGAIN || res == -EWOULDBLOCK))
		return ATTEMPT_WAIT; /* made non-blocking meanwhile, or SO_RCVTIMEO */
	return res;
}

static void *helper_main(void *arg)
{
	struct io_threads *t = arg;

	pthread_setname_np(pthread_self(), "weft-io-file");
	pthread_mutex_lock(&t->lock);
	for (;;) {
		while (!t->q_head && !t->stop)
			pthread_cond_wait(&t->work, &t->lock);
		struct io_op *op = t->q_head;
		if (!op)
			break;
		queue_unlink(t, op);
		uint32_t fl = (uint32_t)op->aux[1];
		set_state(op, ST_RUNNING);
		pthread_mutex_unlock(&t->lock);

		int res = run_op(op, fl);

		bool kick = false;
		pthread_mutex_lock(&t->lock);
		if (res == ATTEMPT_WAIT) {
			if ((op->aux[1] & F_CANCEL) || t->shutdown) {
				res = -ECANCELED;
			} else {
				op->aux[1] &= ~(uint64_t)F_GATED;
				incoming_push(t, op);
				kick = need_kick(t);
			}
		}
		if (res != ATTEMPT_WAIT)
			op->aux[1] = done_word(op); /* a late cancel does nothing */
		pthread_mutex_unlock(&t->lock);
		if (kick)
			kick_poller(t);
		if (res != ATTEMPT_WAIT)
			io_complete(t->rt, op, res); /* op is not ours any more */
		pthread_mutex_lock(&t->lock);
	}
	pthread_mutex_unlock(&t->lock);
	return NULL;
}

/* ---- the interface ---- */

/* Whether a read or write goes to the poller: on a pipe or socket (the
 * offset is then ignored, as io_uring does for stream files), or at
 * WEFT_IO_CUR on any file that is not a regular file, block device or
 * directory (ttys, eventfds, character devices). */
static bool pollable_rw(const struct io_op *op)
{
	struct stat st;
	if (fstat(op->fd, &st) < 0)
		return false; /* the helper reports the error */
	if (S_ISFIFO(st.st_mode) || S_ISSOCK(st.st_mode))
		return true;
	return op->off == WEFT_IO_CUR && !S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode) && !S_ISDIR(st.st_mode);
}

void io_threads_submit(struct io_threads *t, struct io_op *op)
{
	uint32_t fl = 0;
	bool poller = true;

	/* Classify before taking the lock (fcntl/fstat are syscalls). */
	switch (op->opcode) {
	case IOP_TIMEOUT: {
		uint64_t now = now_ns();
		op->aux[0] = op->off > UINT64_MAX - now ? UINT64_MAX : now + op->off;
		break;
	}
	case IOP_POLL:
		break;
	/* The others are tried once at once, as io_uring does: no wait
	 * when the data is there, and errors such as ENOTSOCK come now. */
	case IOP_ACCEPT:
	case IOP_RECV:
	case IOP_SEND:
		fl = F_FRESH;
		break;
	case IOP_CONNECT: {
		int f = fcntl(op->fd, F_GETFL);
		if (f >= 0 && (f & O_NONBLOCK))
			fl = F_FRESH;
		else
			poller = false;
		break;
	}
	case IOP_READ:
	case IOP_WRITE:
	case IOP_READV:
	case IOP_WRITEV:
		poller = pollable_rw(op);
		fl = poller ? F_FRESH : 0;
		break;
	default:
		poller = false;
		break;
	}

	bool kick = false;
	pthread_mutex_lock(&t->lock);
	uint64_t prev = op->aux[1];
	bool precancelled = (prev & ST_MASK) == ST_PRECANCEL && (uint32_t)(prev >> 32) == op_gen(op);
	op->aux[1] = fl | (precancelled ? F_CANCEL : 0);
	if (poller || precancelled || t->shutdown) {
		/* The poller completes a cancelled op (and after shutdown,
		 * every op) with -ECANCELED. */
		incoming_push(t, op);
		kick = need_kick(t);
	} else {
		queue_push(t, op, false);
	}
	pthread_mutex_unlock(&t->lock);
	if (kick)
		kick_poller(t);
}

int io_threads_cancel(struct io_threads *t, struct io_op *op, uint32_t sg)
{
	int ret = 0;
	bool kick = false, now = false;

	/* The first op's submitter may still be starting us (io.c stores
	 * OP_INFLIGHT before backend_submit starts the threads): not known
	 * here yet, so the caller looks at the op again. */
	if (!t)
		return -ENOENT;
	pthread_mutex_lock(&t->lock);
	/* relaxed: t->lock orders it.  A newer incarnation stores its sg
	 * before its io_threads_submit takes the lock and writes aux[1], so
	 * having seen that aux[1] we cannot read an older sg; and while the
	 * op is ours, sg does not change. */
	if (load_relaxed(&op->sg) != sg) {
		pthread_mutex_unlock(&t->lock);
		return -ENOENT;
	}
	switch (iot_state(op)) {
	case ST_INCOMING:
	case ST_WAITING:
	case ST_PBUSY:
		op->aux[1] |= F_CANCEL;
		kick = need_kick(t);
		break;
	case ST_QUEUED:
		queue_unlink(t, op);
		op->aux[1] = done_word(op);
		now = true;
		break;
	case ST_RUNNING:
		op->aux[1] |= F_CANCEL; /* a gated op that finds nothing ready */
		ret = -EALREADY;
		break;
	case ST_DONE:
		if ((uint32_t)(op->aux[1] >> 32) == sg >> 8)
			break; /* this incarnation completed: io_complete is due */
		/* An older one: this one has not reached us. */
		__attribute__((fallthrough));
	default:
		/* OP_INFLIGHT but not yet in io_threads_submit: leave a
		 * mark that submit turns into F_CANCEL. */
		op->aux[1] = (uint64_t)(sg >> 8) << 32 | ST_PRECANCEL;
		break;
	}
	pthread_mutex_unlock(&t->lock);
	if (kick)
		kick_poller(t);
	if (now)
		io_complete(t->rt, op, -ECANCELED);
	return ret;
}

void io_threads_shutdown(struct io_threads *t)
{
	struct io_op *done = NULL, **dtail = &done;
	bool kick;

	pthread_mutex_lock(&t->lock);
	t->shutdown = true;
	for (struct io_op *op = t->q_head, *next; op; op = next) {
		next = op->next;
		if ((op->aux[1] & F_GATED) || op->opcode == IOP_CONNECT) {
			queue_unlink(t, op);
			finish(op, -ECANCELED, &dtail);
		}
	}
	kick = need_kick(t);
	pthread_mutex_unlock(&t->lock);
	if (kick)
		kick_poller(t);
	complete_list(t, done);
}

void io_threads_stop(struct io_threads *t)
{
	if (!t)
		return;
	if (t->efd >= 0)
		io_threads_shutdown(t);
	pthread_mutex_lock(&t->lock);
	t->stop = true;
	bool kick = t->efd >= 0 && need_kick(t);
	pthread_cond_broadcast(&t->work);
	pthread_mutex_unlock(&t->lock);
	if (kick)
		kick_poller(t);
	if (t->poller_started)
		pthread_join(t->poller, NULL);
	for (unsigned i = 0; i < t->nhelpers; i++)
		pthread_join(t->helpers[i], NULL);
	if (t->efd >= 0)
		close(t->efd);
	pthread_cond_destroy(&t->work);
	pthread_mutex_destroy(&t->lock);
	free(t->p.ops);
	free(t->p.rev);
	free(t->p.slot);
	free(t->p.busy);
	free(t->p.pfd);
	free(t->p.fdmap);
	free(t);
}

int io_threads_start(struct weft_rt *rt, struct io_threads **out)
{
	struct io_threads *t = calloc(1, sizeof *t);
	if (!t)
		return -ENOMEM;
	t->rt = rt;
	t->efd = -1;
	int err = pthread_mutex_init(&t->lock, NULL);
	if (err) {
		free(t);
		return -err;
	}
	err = pthread_cond_init(&t->work, NULL);
	if (err) {
		pthread_mutex_destroy(&t->lock);
		free(t);
		return -err;
	}
	t->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (t->efd < 0) {
		err = -errno;
		io_threads_stop(t);
		return err;
	}
	if (!poller_grow(&t->p, 64)) {
		io_threads_stop(t);
		return -ENOMEM;
	}

	/* The threads start with every signal blocked (see Invariants). */
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	err = pthread_create(&t->poller, NULL, poller_main, t);
	if (!err)
		t->poller_started = true;
	for (unsigned i = 0; i < IOT_HELPERS && !err; i++) {
		err = pthread_create(&t->helpers[i], NULL, helper_main, t);
		if (!err)
			t->nhelpers++;
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (err) {
		io_threads_stop(t);
		return -err;
	}
	/* release: pairs with the load_acquire of io->th in io.c's
	 * backend_submit, which reads *out without io->lock. */
	store_release(out, t);
	return 0;
}
