/*
 * ring.c: the io_uring backend: one ring per worker, created by the worker
 * on its first submission, and the worker's park on that ring.
 *
 * Overview
 *   A task on worker w that submits I/O fills an SQE of w's ring; nothing
 *   is entered yet.  The worker flushes the SQ and reaps the CQ in
 *   ring_poll(), which runs when its deque runs dry and every 61st task
 *   (worker.c), so a burst of submissions costs one io_uring_enter.  Each
 *   CQE becomes a task on w's deque (io_complete), where other workers can
 *   steal it.
 *
 *   A worker that has a ring parks on it (ring_sleep): it arms, once, an
 *   IORING_OP_FUTEX_WAIT on its own park_word (kernel >= 6.7; liburing 2.3
 *   has no helper, so the SQE is filled by hand) and waits in
 *   io_uring_enter for one CQE.  A waker's ordinary FUTEX_WAKE completes
 *   that wait, and any I/O completion ends the enter too, so the worker
 *   wakes for either.  Fallbacks: an eventfd read kept armed on the ring
 *   (the waker writes the eventfd; park_word then says PARK_SLEEPING_EFD so
 *   the waker knows), and last a plain futex wait with a 1 ms timeout that
 *   looks at the ring in between.
 *
 * Invariants
 *   - Only the owner touches the ring (IORING_SETUP_SINGLE_ISSUER when the
 *     kernel has it).  Other threads reach it through w->io_mail (cancel
 *     requests), a push-only stack the owner drains whole.
 *   - `inflight` counts operations the ring owes a completion for
 *     (kernel + user-space backlog).  Termination (rt.c) needs it at 0 on
 *     every ring.  A CQE reaped while the worker is still announced as
 *     parked only lowers it in the next ring_poll(), which runs awake with
 *     an empty deque: until then its callback task may sit on the worker's
 *     private deque, where the termination check cannot see it.
 *   - At most one FUTEX_WAIT and one eventfd read are armed at a time; one
 *     stays armed across parks until its CQE comes.  So a FUTEX_WAKE of one
 *     waiter always reaches the worker: nobody else waits on its word.
 *   - No lost wakeup: the word is re-checked by the kernel when the wait
 *     is armed (-EAGAIN if it changed), and an armed wait is woken by every
 *     FUTEX_WAKE after it.  The eventfd counter keeps a signal until read.
 */
#include "ring.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <liburing.h>

#include "io.h"
#include "os.h"
#include "rt.h"

#ifndef IORING_OP_FUTEX_WAIT
#define IORING_OP_FUTEX_WAIT 51
#endif
#define FUTEX2_SIZE_U32_ 0x02u
#define FUTEX2_PRIVATE_ 128u
#define FUTEX_BITSET_MATCH_ANY_ 0xffffffffu

/* user_data of the ring's own requests; operations use their handle
 * (a positive int), so these never collide. */
#define UD_FUTEX (1ull << 62)
#define UD_EVENTFD ((1ull << 62) + 1)
#define UD_CANCEL ((1ull << 62) + 2)

#define REAP_BATCH 32

struct ring_counters {
	uint64_t submitted;
	uint64_t completed;
	uint64_t cancelled;
	uint64_t ring_parks;
	uint64_t sq_full;
	uint64_t backlogged;
	uint64_t cq_overflows;
};

struct ring {
	struct io_uring ring;
	const struct ring_setup *setup;
	uint32_t inflight;        /* owner writes, termination check reads */
	uint32_t settle;          /* completions reaped while parked */
	bool in_park;
	bool futex_armed;
	bool efd_armed;
	bool cancel_all_sent;
	int efd;
	uint64_t efd_buf;
	struct io_op *backlog_head, *backlog_tail;
	struct mail *mail_retry;  /* cancel requests waiting for an SQE */
	struct ring_counters stats WEFT_ALIGNED;
};

struct mail {
	struct mail *next;
	int handle;
};

/* ---- probing ------------------------------------------------------------ */

static unsigned park_from_env(void)
{
	const char *e = getenv("WEFT_IO_PARK");
	if (!e)
		return WEFT_IO_PARK_AUTO;
	if (!strcmp(e, "futex"))
		return WEFT_IO_PARK_FUTEX_OP;
	if (!strcmp(e, "eventfd"))
		return WEFT_IO_PARK_EVENTFD;
	if (!strcmp(e, "poll"))
		return WEFT_IO_PARK_POLL;
	return WEFT_IO_PARK_AUTO;
}

int ring_probe(const struct weft_config *cfg, struct ring_setup *out)
{
	/* Best first; a kernel that does not know a flag says -EINVAL. */
	static const unsigned tries[] = {
		IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_TASKRUN_FLAG,
		IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG,
		IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG,
		0,
	};
	struct io_uring ring;
	int r = -EINVAL;
	unsigned flags = 0;
	for (size_t i = 0; i < sizeof(tries) / sizeof(tries[0]); i++) {
		struct io_uring_params p;
		memset(&p, 0, sizeof(p));
		p.flags = tries[i];
		r = os_ring_init(4, &ring, &p);
		if (r == 0) {
			flags = tries[i];
			break;
		}
		if (r != -EINVAL)
			return r;
	}
	if (r < 0)
		return r;
	struct io_uring_probe *probe = io_uring_get_probe_ring(&ring);
	bool futex_op = probe && io_uring_opcode_supported(probe, IORING_OP_FUTEX_WAIT);
	bool ok = probe && io_uring_opcode_supported(probe, IORING_OP_READ) &&
		  io_uring_opcode_supported(probe, IORING_OP_ACCEPT) &&
		  io_uring_opcode_supported(probe, IORING_OP_SEND) &&
		  io_uring_opcode_supported(probe, IORING_OP_OPENAT) &&
		  io_uring_opcode_supported(probe, IORING_OP_CLOSE);
	if (probe)
		io_uring_free_probe(probe);
	io_uring_queue_exit(&ring);
	/* Every opcode weft uses arrived by 5.6; older kernels get threads. */
	if (!ok)
		return -ENOSYS;

	out->flags = flags;
	out->entries = cfg->io_entries ? cfg->io_entries : 256;
	/* The kernel's IORING_MAX_ENTRIES: refuse here, not at every
	 * worker's first submission. */
	if (out->entries > 32768)
		return -EINVAL;
	/* 5.19 brought IORING_ASYNC_CANCEL_ANY together with SINGLE_ISSUER's
	 * neighbours; a kernel that took SINGLE_ISSUER (6.0) has it. */
	out->cancel_any = (flags & IORING_SETUP_SINGLE_ISSUER) != 0;
	unsigned park = cfg->io_park ? cfg->io_park : park_from_env();
	if (park > WEFT_IO_PARK_POLL)
		return -EINVAL;
	if (park == WEFT_IO_PARK_AUTO || (park == WEFT_IO_PARK_FUTEX_OP && !futex_op))
		park = futex_op ? WEFT_IO_PARK_FUTEX_OP : WEFT_IO_PARK_EVENTFD;
	out->park = park;
	return 0;
}

/* ---- the ring ------------------------------------------------------------ */

static int ring_create(struct weft_worker *w)
{
	const struct ring_setup *s = w->rt->io_setup;
	struct ring *r = calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	r->setup = s;
	r->efd = -1;
	struct io_uring_params p;
	memset(&p, 0, sizeof(p));
	p.flags = s->flags;
	int err = os_ring_init(s->entries, &r->ring, &p);
	if (err < 0) {
		free(r);
		return err;
	}
	if (s->park == WEFT_IO_PARK_EVENTFD) {
		r->efd = eventfd(0, EFD_CLOEXEC);
		if (r->efd < 0) {
			err = -errno;
			io_uring_queue_exit(&r->ring);
			free(r);
			return err;
		}
	}
	/* release: pairs with ring_wake_fd's and ring_stats' load_acquire. */
	store_release(&w->ring, r);
	return 0;
}

static struct io_uring_sqe *ring_sqe(struct ring *r)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&r->ring);
	if (!sqe) {
		count(&r->stats.sq_full);
		/* A full SQ: hand it to the kernel and try again. */
		os_ring_submit(&r->ring, false);
		sqe = io_uring_get_sqe(&r->ring);
	}
	return sqe;
}

static void prep(struct io_uring_sqe *sqe, struct io_op *op, int handle)
{
	switch (op->opcode) {
	case IOP_READ:
		io_uring_prep_read(sqe, op->fd, op->addr, op->len, op->off);
		break;
	case IOP_WRITE:
		io_uring_prep_write(sqe, op->fd, op->addr, op->len, op->off);
		break;
	case IOP_READV:
		io_uring_prep_readv(sqe, op->fd, op->addr, op->len, op->off);
		break;
	case IOP_WRITEV:
		io_uring_prep_writev(sqe, op->fd, op->addr, op->len, op->off);
		break;
	case IOP_FSYNC:
		io_uring_prep_fsync(sqe, op->fd, (op->flags & WEFT_IO_DATASYNC) ? IORING_FSYNC_DATASYNC : 0);
		break;
	case IOP_OPENAT:
		io_uring_prep_openat(sqe, op->fd, op->addr, (int)op->flags, (mode_t)op->off);
		break;
	case IOP_CLOSE:
		io_uring_prep_close(sqe, op->fd);
		break;
	case IOP_POLL:
		io_uring_prep_poll_add(sqe, op->fd, op->flags);
		break;
	case IOP_ACCEPT:
		io_uring_prep_accept(sqe, op->fd, op->addr, op->addr2, SOCK_CLOEXEC);
		break;
	case IOP_CONNECT:
		io_uring_prep_connect(sqe, op->fd, op->addr, (socklen_t)op->off);
		break;
	case IOP_RECV:
		io_uring_prep_recv(sqe, op->fd, op->addr, op->len, (int)op->flags);
		break;
	case IOP_SEND:
		io_uring_prep_send(sqe, op->fd, op->addr, op->len, (int)op->flags);
		break;
	case IOP_TIMEOUT: {
		struct __kernel_timespec *ts = (struct __kernel_timespec *)op->aux;
		ts->tv_sec = (long long)(op->off / 1000000000u);
		ts->tv_nsec = (long long)(op->off % 1000000000u);
		io_uring_prep_timeout(sqe, ts, 0, 0);
		break;
	}
	}
	io_uring_sqe_set_data64(sqe, (uint64_t)(uint32_t)handle);
}

/* The owner's view of its own op's handle (the sg word is stable while
 * the op is in flight). */
static int op_handle(struct weft_rt *rt, struct io_op *op)
{
	return io_op_handle(rt, op, load_relaxed(&op->sg));
}

/* Move backlogged operations into the SQ while it has room. */
static void drain_backlog(struct weft_worker *w, struct ring *r)
{
	while (r->backlog_head) {
		struct io_uring_sqe *sqe = io_uring_get_sqe(&r->ring);
		if (!sqe)
			return;
		struct io_op *op = r->backlog_head;
		r->backlog_head = op->next;
		if (!r->backlog_head)
			r->backlog_tail = NULL;
		prep(sqe, op, op_handle(w->rt, op));
	}
}

int ring_submit(struct weft_worker *w, struct io_op *op)
{
	struct ring *r = w->ring;
	if (unlikely(!r)) {
		int err = ring_create(w);
		if (err < 0)
			return err;
		r = w->ring;
	}
	store_relaxed(&r->inflight, r->inflight + 1);
	count(&r->stats.submitted);
	/* FIFO: nothing overtakes what already waits in the backlog. */
	struct io_uring_sqe *sqe = r->backlog_head ? NULL : ring_sqe(r);
	if (!sqe) {
		op->next = NULL;
		if (r->backlog_tail)
			r->backlog_tail->next = op;
		else
			r->backlog_head = op;
		r->backlog_tail = op;
		count(&r->stats.backlogged);
		return 0;
	}
	prep(sqe, op, op_handle(w->rt, op));
	return 0;
}

/* An operation's completion.  Its callback task goes to our deque. */
static void complete_op(struct weft_worker *w, struct ring *r, struct io_op *op, int res)
{
	if (op->opcode == IOP_TIMEOUT && res == -ETIME)
		res = 0;
	count(&r->stats.completed);
	if (res == -ECANCELED)
		count(&r->stats.cancelled);
	io_complete(w->rt, op, res);
	/* After the push: see "inflight" at the top. */
	if (r->in_park)
		r->settle++;
	else
		store_relaxed(&r->inflight, r->inflight - 1);
}

/* Reap every CQE.  Returns how many operations completed. */
static unsigned reap(struct weft_worker *w, struct ring *r)
{
	struct io_uring_cqe *cqes[REAP_BATCH];
	unsigned ops = 0;
	if (io_uring_cq_has_overflow(&r->ring))
		count(&r->stats.cq_overflows);
	for (;;) {
		/* peek_batch also flushes a CQ overflow list the kernel kept. */
		unsigned n = io_uring_peek_batch_cqe(&r->ring, cqes, REAP_BATCH);
		if (n == 0)
			break;
		for (unsigned i = 0; i < n; i++) {
			uint64_t ud = io_uring_cqe_get_data64(cqes[i]);
			int res = cqes[i]->res;
			if (ud == UD_FUTEX)
				r->futex_armed = false;
			else if (ud == UD_EVENTFD)
				r->efd_armed = false;
			else if (ud != UD_CANCEL) {
				complete_op(w, r, io_op_at(w->rt, io_op_handle_index((int)ud)), res);
				ops++;
			}
		}
		io_uring_cq_advance(&r->ring, n);
	}
	return ops;
}

/* Cancel requests from other threads, and the cancel-all of shutdown. */
static void take_mail(struct weft_worker *w, struct ring *r)
{
	/* acquire: pairs with ring_cancel's cas_release push. */
	struct mail *m = load_relaxed(&w->io_mail) ? exchange_acq_rel(&w->io_mail, NULL) : NULL;
	/* Requests that found no SQE last time go first. */
	if (r->mail_retry) {
		struct mail *last = r->mail_retry;
		while (last->next)
			last = last->next;
		last->next = m;
		m = r->mail_retry;
		r->mail_retry = NULL;
	}
	while (m) {
		struct mail *next = m->next;
		/* An operation still in the backlog is not in the kernel yet:
		 * answer it here. */
		bool answered = false;
		for (struct io_op **pp = &r->backlog_head, *prev = NULL; *pp; prev = *pp, pp = &(*pp)->next) {
			if (op_handle(w->rt, *pp) != m->handle)
				continue;
			struct io_op *op = *pp;
			*pp = op->next;
			if (r->backlog_tail == op)
				r->backlog_tail = prev;
			complete_op(w, r, op, -ECANCELED);
			answered = true;
			break;
		}
		struct io_uring_sqe *sqe = answered ? NULL : ring_sqe(r);
		if (sqe) {
			/* Matches the exact handle, generation included: a stale
			 * request finds nothing (-ENOENT, ignored). */
			io_uring_prep_cancel64(sqe, (uint64_t)(uint32_t)m->handle, 0);
			io_uring_sqe_set_data64(sqe, UD_CANCEL);
		} else if (!answered) {
			/* The kernel takes nothing right now: keep the request. */
			m->next = r->mail_retry;
			r->mail_retry = m;
			m = next;
			continue;
		}
		free(m);
		m = next;
	}
	/* seq_cst: pairs with io_shutdown's store; runs once per ring. */
	if (unlikely(!r->cancel_all_sent) && load_seq_cst(&w->rt->io_shutdown)) {
		while (r->backlog_head) {
			struct io_op *op = r->backlog_head;
			r->backlog_head = op->next;
			complete_op(w, r, op, -ECANCELED);
		}
		r->backlog_tail = NULL;
		/* No SQE now: the next poll or park tries again. */
		struct io_uring_sqe *sqe = ring_sqe(r);
		if (sqe) {
			io_uring_prep_cancel64(sqe, 0, IORING_ASYNC_CANCEL_ANY | IORING_ASYNC_CANCEL_ALL);
			io_uring_sqe_set_data64(sqe, UD_CANCEL);
			r->cancel_all_sent = true;
		}
	}
}

/* SQEs to submit, or kernel flags asking for an enter: CQEs kept back on
 * overflow and, with `taskrun`, task work waiting (COOP/DEFER_TASKRUN with
 * TASKRUN_FLAG). */
static bool ring_wants_enter(struct ring *r, bool taskrun)
{
	/* acquire: the kernel writes the word; pairs with its own smp_store. */
	unsigned f = load_acquire(r->ring.sq.kflags);
	unsigned mask = IORING_SQ_CQ_OVERFLOW | (taskrun ? IORING_SQ_TASKRUN : 0);
	return io_uring_sq_ready(&r->ring) > 0 || (f & mask);
}

static bool ring_needs_enter(struct ring *r)
{
	return ring_wants_enter(r, true);
}

bool ring_poll(struct weft_worker *w)
{
	struct ring *r = w->ring;
	/* Completions reaped while parked count as done only now: we are
	 * awake and their callback tasks have been run or taken. */
	if (r->settle) {
		store_relaxed(&r->inflight, r->inflight - r->settle);
		r->settle = 0;
	}
	if (load_relaxed(&w->io_mail) || r->mail_retry || unlikely(load_relaxed(&w->rt->io_shutdown)))
		take_mail(w, r);
	if (ring_needs_enter(r)) {
		int rc = os_ring_submit(&r->ring, true);
		/* -EBUSY/-EAGAIN: the CQ is backed up; reaping below makes room
		 * and the SQEs stay queued for the next enter. */
		(void)rc;
	}
	unsigned n = 0;
	if (io_uring_cq_ready(&r->ring) || io_uring_cq_has_overflow(&r->ring))
		n = reap(w, r);
	if (r->backlog_head) {
		drain_backlog(w, r);
		os_ring_submit(&r->ring, false);
	}
	return n > 0;
}

bool ring_has_work(struct weft_worker *w)
{
	struct ring *r = w->ring;
	/* Not the kernel's TASKRUN flag: it was seen to stay set after an
	 * enter that ran the task work (DEFER_TASKRUN, eventfd park, after
	 * the shutdown's cancel-all), and a worker that counts it as work
	 * never parks: it spun through park_worker's recheck for good while
	 * weft_destroy waited.  Parking on the ring enters the kernel, which
	 * runs pending task work, so it is never left behind. */
	return io_uring_cq_ready(&r->ring) > 0 || ring_wants_enter(r, false) || r->backlog_head || r->mail_retry ||
	       load_relaxed(&w->io_mail) != NULL;
}

uint32_t ring_sleep_value(struct weft_worker *w)
{
	return w->ring->setup->park == WEFT_IO_PARK_EVENTFD ? PARK_SLEEPING_EFD : PARK_SLEEPING;
}

bool ring_sleep(struct weft_worker *w, uint32_t expect)
{
	struct ring *r = w->ring;
	r->in_park = true;
	if (load_relaxed(&w->io_mail) || r->mail_retry || unlikely(load_relaxed(&w->rt->io_shutdown)))
		take_mail(w, r);
	drain_backlog(w, r);
	count(&r->stats.ring_parks);
	unsigned park = r->setup->park;
	/* No SQE to arm the wait with (the kernel takes nothing right now):
	 * sleep the poll way for once rather than spin. */
	if ((park == WEFT_IO_PARK_FUTEX_OP && !r->futex_armed) || (park == WEFT_IO_PARK_EVENTFD && !r->efd_armed))
		if (io_uring_sq_space_left(&r->ring) == 0 && os_ring_submit(&r->ring, false) <= 0 &&
		    io_uring_sq_space_left(&r->ring) == 0)
			park = WEFT_IO_PARK_POLL;
	switch (park) {
	case WEFT_IO_PARK_FUTEX_OP:
		if (!r->futex_armed) {
			struct io_uring_sqe *sqe = ring_sqe(r);
			if (!sqe)
				break;
			/* liburing 2.3 has no io_uring_prep_futex_wait. */
			memset(sqe, 0, sizeof(*sqe));
			sqe->opcode = IORING_OP_FUTEX_WAIT;
			sqe->fd = (int)(FUTEX2_SIZE_U32_ | FUTEX2_PRIVATE_);
			sqe->addr = (uint64_t)(uintptr_t)&w->park_word;
			sqe->addr2 = expect;
			sqe->addr3 = FUTEX_BITSET_MATCH_ANY_;
			sqe->user_data = UD_FUTEX;
			r->futex_armed = true;
		}
		os_ring_enter(&r->ring, 1);
		break;
	case WEFT_IO_PARK_EVENTFD:
		if (!r->efd_armed) {
			struct io_uring_sqe *sqe = ring_sqe(r);
			if (!sqe)
				break;
			io_uring_prep_read(sqe, r->efd, &r->efd_buf, sizeof(r->efd_buf), 0);
			io_uring_sqe_set_data64(sqe, UD_EVENTFD);
			r->efd_armed = true;
		}
		os_ring_enter(&r->ring, 1);
		break;
	default:
		/* Last resort: the core's futex park, looking at the ring every
		 * millisecond. */
		os_ring_submit(&r->ring, false);
		os_futex_wait(&w->park_word, expect, 1000 * 1000);
		if (ring_needs_enter(r))
			os_ring_submit(&r->ring, true);
		break;
	}
	return reap(w, r) > 0;
}

bool ring_park_polls(struct weft_worker *w)
{
	return w->ring->setup->park == WEFT_IO_PARK_POLL;
}

bool ring_in_park(struct weft_worker *w)
{
	return w->ring->in_park;
}

void ring_after_park(struct weft_worker *w)
{
	struct ring *r = w->ring;
	r->in_park = false;
	/* Several callbacks arrived at once: let an idle worker help. */
	if (r->settle && deque_size(&w->deque) > 1)
		maybe_wake_for(w);
}

int ring_wake_fd(struct weft_worker *w)
{
	/* acquire: pairs with ring_create's store_release. */
	struct ring *r = load_acquire(&w->ring);
	return r ? r->efd : -1;
}

void ring_cancel(struct weft_worker *w, int handle)
{
	struct mail *m = malloc(sizeof(*m));
	if (!m)
		return;
	m->handle = handle;
	void *head = load_relaxed(&w->io_mail);
	/* release: pairs with take_mail's exchange; a push-only stack drained
	 * whole by its one reader has no ABA problem. */
	do
		m->next = head;
	while (!cas_release(&w->io_mail, &head, (void *)m));
	park_notify(w);
}

uint32_t ring_inflight(struct weft_worker *w)
{
	struct ring *r = load_acquire(&w->ring);
	/* seq_cst: read by the termination check after its seq_cst look at
	 * nparked_main (see rt_try_exit). */
	return r ? load_seq_cst(&r->inflight) : 0;
}

void ring_stats(struct weft_worker *w, struct weft_io_stats *out)
{
	/* acquire: pairs with ring_create's store_release. */
	struct ring *r = load_acquire(&w->ring);
	if (!r)
		return;
	out->submitted += load_relaxed(&r->stats.submitted);
	out->completed += load_relaxed(&r->stats.completed);
	out->cancelled += load_relaxed(&r->stats.cancelled);
	out->ring_parks += load_relaxed(&r->stats.ring_parks);
	out->sq_full += load_relaxed(&r->stats.sq_full);
	out->backlogged += load_relaxed(&r->stats.backlogged);
	out->cq_overflows += load_relaxed(&r->stats.cq_overflows);
}

void ring_fini(struct weft_worker *w)
{
	struct ring *r = w->ring;
	if (!r)
		return;
	/* The eventfd stays open until every thread that could still signal
	 * it (a waker that read PARK_SLEEPING_EFD just before we left) is
	 * gone: ring_free, after the workers are joined. */
	io_uring_queue_exit(&r->ring);
}

void ring_free(struct weft_worker *w)
{
	struct ring *r = w->ring;
	if (!r)
		return;
	if (r->efd >= 0)
		close(r->efd);
	/* Cancel requests that came too late to matter. */
	struct mail *lists[2] = { r->mail_retry, w->io_mail };
	for (int i = 0; i < 2; i++)
		while (lists[i]) {
			struct mail *next = lists[i]->next;
			free(lists[i]);
			lists[i] = next;
		}
	w->io_mail = NULL;
	free(r);
	w->ring = NULL;
}
