/*
 * uring_raw.c: the baseline of the chained-reads row: the loop a
 * programmer writes with liburing and no runtime, on one thread.  Keep
 * `inflight` reads in the ring; wait for at least one completion, reap
 * every completion there is, prepare the next read of each finished chain,
 * and submit them all with the next wait (one io_uring_enter per batch).
 *
 * Default ring flags: that is what the plain loop uses.  Page-cache reads
 * complete inline during submission anyway, so SQPOLL or DEFER_TASKRUN
 * would change little here and would make the baseline less typical.
 */
#define _GNU_SOURCE 1
#include "baselines.h"
#include "bench_util.h"

#include <errno.h>
#include <liburing.h>
#include <stdlib.h>
#include <string.h>

struct slot {
	uint64_t rng;
	uint64_t page;
	unsigned char *buf;
};

static void prep(struct io_uring *ring, int fd, struct slot *s, uint64_t pages)
{
	/* Never NULL: the ring has twice as many entries as reads in flight,
	 * and every batch is submitted before the next is prepared. */
	struct io_uring_sqe *sqe = io_uring_get_sqe(ring);

	s->page = bench_next_page(&s->rng, pages);
	io_uring_prep_read(sqe, fd, s->buf, BENCH_READ_SIZE, s->page * BENCH_READ_SIZE);
	io_uring_sqe_set_data(sqe, s);
}

int bench_uring_reads(int fd, uint64_t pages, unsigned inflight, uint64_t duration_ns,
		      uint64_t *ops, uint64_t *elapsed_ns)
{
	struct io_uring ring;
	struct slot *slots = calloc(inflight, sizeof *slots);
	unsigned char *bufs = NULL;
	unsigned live = inflight;
	uint64_t done = 0, t0, deadline;
	int rc;

	*ops = *elapsed_ns = 0;
	if (!slots || posix_memalign((void **)&bufs, 4096, (size_t)inflight * BENCH_READ_SIZE) != 0) {
		free(slots);
		return -ENOMEM;
	}
	rc = io_uring_queue_init(inflight * 2, &ring, 0);
	if (rc < 0) {
		free(bufs);
		free(slots);
		return rc;
	}
	t0 = bench_now_ns();
	deadline = t0 + duration_ns;
	for (unsigned i = 0; i < inflight; i++) {
		/* The same seeds as weft's chains: both read the same pages. */
		slots[i].rng = 0x9e3779b97f4a7c15ull * (i + 1);
		slots[i].buf = bufs + (size_t)i * BENCH_READ_SIZE;
		prep(&ring, fd, &slots[i], pages);
	}
	while (live > 0) {
		struct io_uring_cqe *cqe;
		unsigned head, seen = 0;
		bool more;

		rc = io_uring_submit_and_wait(&ring, 1);
		if (rc < 0 && rc != -EINTR)
			break;
		rc = 0;
		/* One clock read per batch, not per completion: the cheaper
		 * choice, which favours the baseline. */
		more = bench_now_ns() < deadline;
		io_uring_for_each_cqe(&ring, head, cqe)
		{
			struct slot *s = io_uring_cqe_get_data(cqe);
			uint64_t first;

			seen++;
			if (cqe->res != (int)BENCH_READ_SIZE) {
				rc = cqe->res < 0 ? cqe->res : -EIO;
				live--;
				continue;
			}
			memcpy(&first, s->buf, sizeof first);
			if (first != s->page * BENCH_READ_SIZE) {
				rc = -EIO;
				live--;
				continue;
			}
			done++;
			if (more)
				prep(&ring, fd, s, pages);
			else
				live--;
		}
		io_uring_cq_advance(&ring, seen);
		if (rc < 0)
			break;
	}
	*elapsed_ns = bench_now_ns() - t0;
	*ops = done;
	io_uring_queue_exit(&ring);
	free(bufs);
	free(slots);
	return rc;
}
