/*
 * io.c: the I/O front end: the public weft_io_* calls, the op table and its
 * handles, cancellation, and the choice of backend (ring.c: io_uring, one
 * ring per worker; io_threads.c: helper threads where io_uring is missing or
 * forbidden).
 *
 * Overview
 *   A submit takes an op record from the table (a worker from its own
 *   cache, refilled 32 at a time under the table lock; other threads under
 *   the lock), fills it and hands it on.  On a worker the op goes straight
 *   to the backend (that worker's ring: no lock).  From any other thread it
 *   travels as a task through the node's injection queue and is submitted
 *   by whichever worker runs that task.  The completion becomes a task that
 *   frees the op and then calls the callback.
 *
 * Invariants
 *   - The op's sg word (generation | state, see io.h) moves FREE -> QUEUED
 *     -> INFLIGHT -> DONE -> FREE, or FREE -> INFLIGHT -> DONE -> FREE on a
 *     worker.  QUEUED -> INFLIGHT (the submitting task) and QUEUED -> DONE
 *     (a cancel) race by CAS on the whole word, so exactly one wins; the
 *     generation in the word makes a late CAS on a reused slot fail.
 *   - Exactly one callback per successful submit: only the winner of the
 *     QUEUED CAS, or the backend through io_complete(), queues it.
 *   - Termination: an op counts as pending work from submit until its
 *     callback task is queued -- as a queued task (QUEUED), in its ring's
 *     inflight count, or in th_inflight (helper threads), each decremented
 *     only after the callback task is visible (see rt_try_exit).
 */
#include "io.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "os.h"
#include "ring.h"
#include "rt.h"

#define CACHE_REFILL 32
#define CACHE_MAX 64
/* Linux transfers at most this much in one read or write. */
#define IO_MAX_LEN 0x7ffff000u

struct io_counters {
	uint64_t submitted;
	uint64_t completed;
	uint64_t cancelled;
};

struct weft_io {
	unsigned backend;
	struct ring_setup setup;
	struct io_op *ops;       /* IO_MAX_OPS slots, reserved, touched on use */
	pthread_mutex_t lock;    /* free, bump, th */
	struct io_op *free;
	uint32_t bump;           /* next never-used slot; read by cancel */
	struct io_threads *th;   /* started on first use */
	/* Helper-thread backend: ops handed over and not yet completed. */
	uint32_t th_inflight WEFT_ALIGNED;
	/* Counted here, not in a ring: the helper backend's operations and
	 * outside operations cancelled before they reached a worker. */
	struct io_counters fe_stats;
};

/* ---- the op table ----------------------------------------------------------- */

struct io_op *io_op_at(struct weft_rt *rt, uint32_t index)
{
	return &rt->io->ops[index];
}

uint32_t io_op_index(struct weft_rt *rt, const struct io_op *op)
{
	return (uint32_t)(op - rt->io->ops);
}

int io_op_handle(struct weft_rt *rt, const struct io_op *op, uint32_t sg)
{
	return (int)(((sg >> 8) & IO_GEN_MASK) << IO_INDEX_BITS | io_op_index(rt, op));
}

/* Under io->lock. */
static struct io_op *take_slot(struct weft_io *io)
{
	struct io_op *op = io->free;
	if (op) {
		io->free = op->next;
		return op;
	}
	if (io->bump >= IO_MAX_OPS)
		return NULL;
	op = &io->ops[io->bump];
	/* release: cancel reads bump before it looks at a slot. */
	store_release(&io->bump, io->bump + 1);
	return op;
}

static struct io_op *op_alloc(struct weft_rt *rt, struct weft_worker *w)
{
	struct weft_io *io = rt->io;
	struct io_op *op;
	if (w) {
		if (unlikely(!w->io_cache)) {
			pthread_mutex_lock(&io->lock);
			for (int i = 0; i < CACHE_REFILL; i++) {
				op = take_slot(io);
				if (!op)
					break;
				op->next = w->io_cache;
				w->io_cache = op;
				w->io_cache_n++;
			}
			pthread_mutex_unlock(&io->lock);
			if (!w->io_cache)
				return NULL;
		}
		op = w->io_cache;
		w->io_cache = op->next;
		w->io_cache_n--;
		return op;
	}
	pthread_mutex_lock(&io->lock);
	op = take_slot(io);
	pthread_mutex_unlock(&io->lock);
	return op;
}

static void op_release(struct weft_rt *rt, struct weft_worker *w, struct io_op *op)
{
	struct weft_io *io = rt->io;
	uint32_t sg = load_relaxed(&op->sg);
	/* release: a canceller that sees the new generation knows the handle
	 * is stale; nothing it could act on is left. */
	store_release(&op->sg, op_sg((sg >> 8) + 1, OP_FREE));
	if (w) {
		op->next = w->io_cache;
		w->io_cache = op;
		if (++w->io_cache_n <= CACHE_MAX)
			return;
		/* Spill half: a worker that only completes others' ops must not
		 * hoard the table. */
		pthread_mutex_lock(&io->lock);
		while (w->io_cache_n > CACHE_MAX / 2) {
			struct io_op *o = w->io_cache;
			w->io_cache = o->next;
			w->io_cache_n--;
			o->next = io->free;
			io->free = o;
		}
		pthread_mutex_unlock(&io->lock);
		return;
	}
	pthread_mutex_lock(&io->lock);
	op->next = io->free;
	io->free = op;
	pthread_mutex_unlock(&io->lock);
}

/* ---- completions ------------------------------------------------------------ */

static struct weft_worker *self_in(struct weft_rt *rt)
{
	struct weft_worker *w = weft_tls_worker;
	return w && w->rt == rt ? w : NULL;
}

/* Free the op first (its handle goes stale, a callback that submits again
 * may reuse the slot), then call.  w is the calling worker or NULL. */
static void run_callback(struct weft_rt *rt, struct weft_worker *w, struct io_op *op)
{
	weft_io_fn fn = op->fn;
	void *ctx = op->ctx;
	int res = op->res;
	op_release(rt, w, op);
	fn(res, ctx);
}

/* The callback, as a task. */
static void callback_task(void *arg)
{
	struct weft_worker *w = weft_tls_worker;
	run_callback(w->rt, w, arg);
}

/* op is DONE with its result set: queue its callback. */
static void queue_callback(struct weft_rt *rt, struct io_op *op)
{
	struct weft_worker *w = self_in(rt);
	if (w) {
		/* Inline rt_push_local: a worker that reaps while it is still
		 * announced as parked must not go through the spawn path's wake
		 * (it could claim itself); ring_settle wakes helpers later. */
		struct weft_task *t = arena_alloc(&w->arena);
		if (likely(t)) {
			t->fn = callback_task;
			t->arg = op;
			t->group = NULL;
			t->flags = 0;
			if (likely(deque_push(&w->deque, t) == 0)) {
				if (!w->ring || !ring_in_park(w))
					maybe_wake_for(w);
				return;
			}
			arena_free(&w->arena, &w->arena, t);
		}
	}
	/* The runtime's own work: accepted while weft_destroy drains. */
	if (rt_push_outside(rt, -1, false, callback_task, op, NULL, true) == 0)
		return;
	/* Out of memory everywhere: run it here rather than lose it. */
	run_callback(rt, w, op);
}

/* An INFLIGHT op is done with res: mark it and queue its callback. */
static void finish(struct weft_rt *rt, struct io_op *op, int res)
{
	uint32_t sg = load_relaxed(&op->sg);
	op->res = res;
	/* release: the callback task (maybe on another worker) reads res;
	 * cancel reads the state. */
	store_release(&op->sg, op_sg(sg >> 8, OP_DONE));
	queue_callback(rt, op);
}

void io_complete(struct weft_rt *rt, struct io_op *op, int res)
{
	struct weft_io *io = rt->io;
	bool threads = io->backend == WEFT_IO_THREADS;
	finish(rt, op, res);
	if (threads) {
		fetch_add_relaxed(&io->fe_stats.completed, 1);
		if (res == -ECANCELED)
			fetch_add_relaxed(&io->fe_stats.cancelled, 1);
		/* seq_cst: after the callback task is queued; read by the
		 * termination check (rt_try_exit). */
		uint64_t was = fetch_sub_seq_cst(&io->th_inflight, 1);
		/* The callback may already have run, on a worker that then
		 * parked and found us still in flight: at shutdown, nobody would
		 * look again (weft_destroy hung so, 1 round in a few thousand).
		 * Wake a parked worker to make the check; seq_cst (our RMW, then
		 * park_wake_one's load of idle_state) against the parker's
		 * announcement and its load of th_inflight. */
		if (was == 1 && load_seq_cst(&rt->io_shutdown))
			park_wake_one(rt, 0);
	}
}

/* ---- submission ------------------------------------------------------------- */

static int start_threads(struct weft_rt *rt)
{
	struct weft_io *io = rt->io;
	int r = 0;
	pthread_mutex_lock(&io->lock);
	if (!io->th) {
		r = io_threads_start(rt, &io->th);
		/* A submit that saw io_shutdown == 0 can get here after
		 * io_shutdown looked for the threads (under this lock) and found
		 * none: then nobody else will shut these down, and the op on its
		 * way (a read on an idle pipe) would keep weft_destroy waiting
		 * for ever.  seq_cst: pairs with io_shutdown's store; if it comes
		 * after our load, its look under the lock finds the threads. */
		if (r == 0 && load_seq_cst(&rt->io_shutdown))
			io_threads_shutdown(io->th);
	}
	pthread_mutex_unlock(&io->lock);
	return r;
}

/* Hand an INFLIGHT op to the backend from worker w. */
static int backend_submit(struct weft_rt *rt, struct weft_worker *w, struct io_op *op)
{
	struct weft_io *io = rt->io;
	if (io->backend == WEFT_IO_URING)
		return ring_submit(w, op);
	/* acquire: pairs with start_threads' unlock (io->th is written under
	 * the lock; a NULL read just takes the lock). */
	if (unlikely(!load_acquire(&io->th))) {
		int r = start_threads(rt);
		if (r < 0)
			return r;
	}
	fetch_add_relaxed(&io->fe_stats.submitted, 1);
	/* seq_cst: before the op can complete; see io_complete. */
	fetch_add_seq_cst(&io->th_inflight, 1);
	io_threads_submit(io->th, op);
	return 0;
}

/* The task that carries an outside thread's op to a worker. */
static void submit_task(void *arg)
{
	int handle = (int)(uintptr_t)arg;
	struct weft_worker *w = weft_tls_worker;
	struct weft_rt *rt = w->rt;
	struct io_op *op = io_op_at(rt, io_op_handle_index(handle));
	uint32_t sg = load_acquire(&op->sg);
	/* A cancel won the race: it queued the callback already. */
	if (op_state(sg) != OP_QUEUED || io_op_handle(rt, op, sg) != handle)
		return;
	/* acq_rel: pairs with the submitter's store_release of QUEUED (the
	 * op's fields) and with a canceller's CAS. */
	if (!cas_acq_rel(&op->sg, &sg, op_sg(sg >> 8, OP_INFLIGHT)))
		return;
	/* release: pairs with weft_io_cancel's load_acquire of owner. */
	store_release(&op->owner, (uint16_t)w->index);
	/* seq_cst: pairs with io_shutdown's store; see ring.c take_mail. */
	int r = load_seq_cst(&rt->io_shutdown) ? -ECANCELED : backend_submit(rt, w, op);
	/* Never reached a backend: no backend count to give back. */
	if (r < 0)
		finish(rt, op, r);
}

static int submit(struct weft_rt *rt, const struct io_op *tmpl)
{
	if (unlikely(!rt || !tmpl->fn))
		return -EINVAL;
	struct weft_worker *w = self_in(rt);
	/* Tasks run until weft_destroy ends; their new I/O is refused once it
	 * began (what is in flight then gets cancelled).  Other threads are
	 * refused by rt_push_outside. */
	if (w && unlikely(load_relaxed(&rt->state) != RT_RUNNING))
		return -ESHUTDOWN;
	struct io_op *op = op_alloc(rt, w);
	if (unlikely(!op))
		return -EAGAIN;
	uint32_t sg = load_relaxed(&op->sg);
	uint32_t gen = sg >> 8;
	op->fn = tmpl->fn;
	op->ctx = tmpl->ctx;
	op->opcode = tmpl->opcode;
	op->fd = tmpl->fd;
	op->len = tmpl->len;
	op->flags = tmpl->flags;
	op->off = tmpl->off;
	op->addr = tmpl->addr;
	op->addr2 = tmpl->addr2;
	op->res = 0;
	store_relaxed(&op->owner, w ? (uint16_t)w->index : (uint16_t)OWNER_UNKNOWN);
	int handle = io_op_handle(rt, op, sg);
	if (w) {
		/* release: a canceller on another thread reads the fields. */
		store_release(&op->sg, op_sg(gen, OP_INFLIGHT));
		int r = backend_submit(rt, w, op);
		if (unlikely(r < 0)) {
			op_release(rt, w, op);
			return r;
		}
		return handle;
	}
	/* release: pairs with submit_task's acquire (the fields). */
	store_release(&op->sg, op_sg(gen, OP_QUEUED));
	int r = rt_push_outside(rt, -1, false, submit_task, (void *)(uintptr_t)handle, NULL, false);
	if (likely(r == 0))
		return handle;
	uint32_t queued = op_sg(gen, OP_QUEUED);
	/* acq_rel: against a canceller that may have answered it already. */
	if (cas_acq_rel(&op->sg, &queued, op_sg(gen, OP_DONE))) {
		op_release(rt, NULL, op);
		return r;
	}
	/* A cancel answered it: its callback is queued, so the submit counts. */
	return handle;
}

static inline uint32_t clamp_len(size_t len)
{
	return len > IO_MAX_LEN ? IO_MAX_LEN : (uint32_t)len;
}

int weft_io_read(weft_rt *rt, int fd, void *buf, size_t len, uint64_t off, weft_io_fn fn, void *ctx)
{
	if (!buf && len)
		return -EINVAL;
	if (fd < 0)
		return -EBADF;
	struct io_op t = { .fn = fn, .ctx = ctx, .opcode = IOP_READ, .fd = fd, .addr = buf, .len = clamp_len(len),
			   .off = off };
	return submit(rt, &t);
}

int weft_io_write(weft_rt *rt, int fd, const void *buf, size_t len, uint64_t off, weft_io_fn fn, void *ctx)
{
	if (!buf && len)
		return -EINVAL;
	if (fd < 0)
		return -EBADF;
	struct io_op t = { .fn = fn, .ctx = ctx, .opcode = IOP_WRITE, .fd = fd, .addr = (void *)buf,
			   .len = clamp_len(len), .off = off };
	return submit(rt, &t);
}

static int vec(weft_rt *rt, int op, int fd, const struct iovec *iov, unsigned iovcnt, uint64_t off, weft_io_fn fn,
	       void *ctx)
{
	if ((!iov && iovcnt) || iovcnt > IOV_MAX)
		return -EINVAL;
	if (fd < 0)
		return -EBADF;
	struct io_op t = { .fn = fn, .ctx = ctx, .opcode = (uint8_t)op, .fd = fd, .addr = (void *)iov,
			   .len = iovcnt, .off = off };
	return submit(rt, &t);
}

int weft_io_readv(weft_rt *rt, int fd, const struct iovec *iov, unsigned iovcnt, uint64_t off, weft_io_fn fn,
		  void *ctx)
{
	return vec(rt, IOP_READV, fd, iov, iovcnt, off, fn, ctx);
}

int weft_io_writev(weft_rt *rt, int fd, const struct iovec *iov, unsigned iovcnt, uint64_t off, weft_io_fn fn,
		   void *ctx)
{
	return vec(rt, IOP_WRITEV, fd, iov, iovcnt, off, fn, ctx);
}

int weft_io_fsync(weft_rt *rt, int fd, unsigned flags, weft_io_fn fn, void *ctx)
{
	if (flags & ~WEFT_IO_DATASYNC)
		return -EINVAL;
	if (fd < 0)
		return -EBADF;
	struct io_op t = { .fn = fn, .ctx = ctx, .opcode = IOP_FSYNC, .fd = fd, .flags = flags };
	return submit(rt, &t);
}

int weft_io_openat(weft_rt *rt, int dirfd, const char *path, int flags, mode_t mode, weft_io_fn fn, void *ctx)
{
	if (!path)
		return -EINVAL;
	struct io_op t = { .fn = fn, .ctx = ctx, .opcode = IOP_OPENAT, .fd = dirfd, .addr = (void *)path,
			   .flags = (uint32_t)flags, .off = mode };
	return submit(rt, &t);
}

int weft_io_close(weft_rt *rt, int fd, weft_io_fn fn, void *ctx)
{
	if (fd < 0)
		return -EBADF;
	struct io_op t = { .fn = fn, .ctx = ctx, .opcode = IOP_CLOSE, .fd = fd };
	return submit(rt, &t);
}

int weft_io_poll(weft_rt *rt, int fd, unsigned events, weft_io_fn fn, void *ctx)
{
	if (fd < 0)
		return -EBADF;
	struct io_op t = { .fn = fn, .ctx = ctx, .opcode = IOP_POLL, .fd = fd, .flags = events };
	return submit(rt, &t);
}

int weft_io_accept(weft_rt *rt, int fd, struct sockaddr *addr, socklen_t *len, weft_io_fn fn, void *ctx)
{
	if (addr && !len)
		return -EINVAL;
	if (fd < 0)
		return -EBADF;
	struct io_op t = { .fn = fn, .ctx = ctx, .opcode = IOP_ACCEPT, .fd = fd, .addr = addr, .addr2 = len };
	return submit(rt, &t);
}

int weft_io_connect(weft_rt *rt, int fd, const struct sockaddr *addr, socklen_t len, weft_io_fn fn, void *ctx)
{
	if (!addr)
		return -EINVAL;
	if (fd < 0)
		return -EBADF;
	struct io_op t = { .fn = fn, .ctx = ctx, .opcode = IOP_CONNECT, .fd = fd, .addr = (void *)addr, .off = len };
	return submit(rt, &t);
}

int weft_io_recv(weft_rt *rt, int fd, void *buf, size_t len, int flags, weft_io_fn fn, void *ctx)
{
	if (!buf && len)
		return -EINVAL;
	if (fd < 0)
		return -EBADF;
	struct io_op t = { .fn = fn, .ctx = ctx, .opcode = IOP_RECV, .fd = fd, .addr = buf, .len = clamp_len(len),
			   .flags = (uint32_t)flags };
	return submit(rt, &t);
}

int weft_io_send(weft_rt *rt, int fd, const void *buf, size_t len, int flags, weft_io_fn fn, void *ctx)
{
	if (!buf && len)
		return -EINVAL;
	if (fd < 0)
		return -EBADF;
	struct io_op t = { .fn = fn, .ctx = ctx, .opcode = IOP_SEND, .fd = fd, .addr = (void *)buf,
			   .len = clamp_len(len), .flags = (uint32_t)flags };
	return submit(rt, &t);
}

int weft_io_timeout(weft_rt *rt, uint64_t ns, weft_io_fn fn, void *ctx)
{
	struct io_op t = { .fn = fn, .ctx = ctx, .opcode = IOP_TIMEOUT, .fd = -1, .off = ns };
	return submit(rt, &t);
}

static int io_cancel(struct weft_rt *rt, int handle);

int weft_io_cancel(weft_rt *rt, int handle)
{
	if (!rt || handle <= 0)
		return -EINVAL;
	/* From another thread, a cancel is a call in like a spawn: it may
	 * queue a callback or nudge a worker, and weft_destroy must not free
	 * the runtime under it (everything in flight is cancelled at
	 * weft_destroy anyway). */
	struct submitter *rec;
	int r = rt_outside_enter(rt, false, &rec);
	if (r < 0)
		return r;
	r = io_cancel(rt, handle);
	rt_outside_leave(rec);
	return r;
}

static int io_cancel(struct weft_rt *rt, int handle)
{
	struct weft_io *io = rt->io;
	uint32_t idx = io_op_handle_index(handle);
	/* acquire: pairs with take_slot's store_release. */
	if (idx == 0 || idx >= load_acquire(&io->bump))
		return -ENOENT;
	struct io_op *op = &io->ops[idx];
	for (;;) {
		/* acquire: pairs with submit's store_release (fields, owner). */
		uint32_t sg = load_acquire(&op->sg);
		if (io_op_handle(rt, op, sg) != handle)
			return -ENOENT;
		switch (op_state(sg)) {
		case OP_QUEUED:
			/* acq_rel: races submit_task's CAS; the winner owns it. */
			if (!cas_acq_rel(&op->sg, &sg, op_sg(sg >> 8, OP_DONE)))
				continue;
			op->res = -ECANCELED;
			fetch_add_relaxed(&io->fe_stats.cancelled, 1);
			queue_callback(rt, op);
			return 0;
		case OP_INFLIGHT:
			if (io->backend == WEFT_IO_URING) {
				/* acquire: pairs with submit_task's store_release; an
				 * outside op is a few instructions from knowing its
				 * worker. */
				uint16_t owner = load_acquire(&op->owner);
				if (owner == OWNER_UNKNOWN) {
					sched_yield();
					continue;
				}
				ring_cancel(rt->workers[owner], handle);
				return 0;
			} else {
				/* acquire: pairs with io_threads_start's release of
				 * io->th.  NULL: the op is between its INFLIGHT mark
				 * and the backend's first start; so is -ENOENT from a
				 * backend that has not seen it yet. */
				struct io_threads *th = load_acquire(&io->th);
				int r = th ? io_threads_cancel(th, op, sg) : -ENOENT;
				if (r == -ENOENT) {
					sched_yield();
					continue;
				}
				return 0;
			}
		default:
			return -ENOENT;
		}
	}
}

/* ---- the runtime's side ----------------------------------------------------- */

static unsigned mode_from_env(void)
{
	const char *e = getenv("WEFT_IO");
	if (e && !strcmp(e, "threads"))
		return WEFT_IO_THREADS;
	if (e && !strcmp(e, "uring"))
		return WEFT_IO_URING;
	return WEFT_IO_AUTO;
}

int io_init(struct weft_rt *rt, const struct weft_config *cfg)
{
	unsigned mode = cfg->io ? cfg->io : mode_from_env();
	if (mode > WEFT_IO_THREADS || cfg->io_park > WEFT_IO_PARK_POLL)
		return -EINVAL;
	struct weft_io *io = calloc(1, sizeof(*io));
	if (!io)
		return -ENOMEM;
	/* Reserved, not committed: a page is touched when its slots are. */
	io->ops = mmap(NULL, (size_t)IO_MAX_OPS * sizeof(struct io_op), PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (io->ops == MAP_FAILED) {
		free(io);
		return -ENOMEM;
	}
	pthread_mutex_init(&io->lock, NULL);
	io->bump = 1; /* handles are > 0 */
	rt->io = io;
	io->backend = WEFT_IO_THREADS;
	if (mode != WEFT_IO_THREADS) {
		int r = ring_probe(cfg, &io->setup);
		if (r == 0) {
			io->backend = WEFT_IO_URING;
			rt->io_setup = &io->setup;
		} else if (mode == WEFT_IO_URING) {
			return r;
		}
	}
	return 0;
}

void io_shutdown(struct weft_rt *rt)
{
	struct weft_io *io = rt->io;
	/* seq_cst: pairs with submit_task's and take_mail's loads. */
	store_seq_cst(&rt->io_shutdown, 1);
	if (io->backend == WEFT_IO_THREADS) {
		/* The look is under the lock, against start_threads: threads
		 * started after it are shut down there (before their first op
		 * is queued).  Both may shut the same threads down: harmless. */
		pthread_mutex_lock(&io->lock);
		struct io_threads *th = io->th;
		pthread_mutex_unlock(&io->lock);
		if (th)
			io_threads_shutdown(th);
		return;
	}
	/* Rings are cancelled by their owners: wake each one that has a ring
	 * (a stray token for a busy one is harmless). */
	for (unsigned i = 0; i < rt->nworkers; i++)
		if (ring_inflight(rt->workers[i]))
			park_notify(rt->workers[i]);
}

bool io_busy(struct weft_rt *rt)
{
	struct weft_io *io = rt->io;
	if (!io)
		return false;
	/* seq_cst: see io_complete and ring_inflight. */
	if (load_seq_cst(&io->th_inflight))
		return true;
	for (unsigned i = 0; i < rt->nworkers; i++)
		if (ring_inflight(rt->workers[i]))
			return true;
	return false;
}

void io_fini(struct weft_rt *rt)
{
	struct weft_io *io = rt->io;
	if (!io)
		return;
	if (io->th)
		io_threads_stop(io->th);
	for (unsigned i = 0; i < rt->nworkers; i++)
		if (rt->workers[i])
			ring_free(rt->workers[i]);
	munmap(io->ops, (size_t)IO_MAX_OPS * sizeof(struct io_op));
	pthread_mutex_destroy(&io->lock);
	free(io);
	rt->io = NULL;
}

void io_stats(struct weft_rt *rt, struct weft_io_stats *out)
{
	struct weft_io *io = rt->io;
	out->backend = io->backend;
	out->park = io->backend == WEFT_IO_URING ? io->setup.park : 0;
	out->submitted = load_relaxed(&io->fe_stats.submitted);
	out->completed = load_relaxed(&io->fe_stats.completed);
	out->cancelled = load_relaxed(&io->fe_stats.cancelled);
	for (unsigned i = 0; i < rt->nworkers; i++)
		ring_stats(rt->workers[i], out);
}

int weft_io_backend(const weft_rt *rt)
{
	return rt ? (int)rt->io->backend : -EINVAL;
}

int weft_io_park_mechanism(const weft_rt *rt)
{
	if (!rt)
		return -EINVAL;
	return rt->io->backend == WEFT_IO_URING ? (int)rt->io->setup.park : 0;
}
