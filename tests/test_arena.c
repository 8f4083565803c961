/*
 * test_arena.c: node_alloc and the per-worker frame arena (runtime/arena.c).
 *
 * Checks node_alloc's promises (page alignment, zeroing, 2 MiB alignment of
 * large sizes, no huge pages), that memory stays flat under local and remote
 * frees, that remote frees travel in batches (full ones pushed at once,
 * partial ones at arena_flush, slots shared between owners, a freer that is
 * no worker) and every frame comes back exactly once, that a frame is never
 * handed out twice while live, that allocation
 * failure surfaces as NULL / -ENOMEM, and prints the cost of an alloc+free
 * pair.
 *
 * WEFT_TEST_SCALE=n divides the iteration counts (use 20 under TSan).
 * Under TSan the file carries its own runner (see below).
 * Helper threads never call cr_assert; they count errors for the main thread.
 */
#include "arena.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <stdbool.h>

#include "crit.h"

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define UNDER_SANITIZER 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define UNDER_SANITIZER 1
#endif
#endif
#ifndef UNDER_SANITIZER
#define UNDER_SANITIZER 0
#endif

/* The raw syscall because runtime/sched.h shadows the system <sched.h>
 * on the runtime include path. */
static void yield_cpu(void)
{
	syscall(SYS_sched_yield);
}

static unsigned long scaled(unsigned long n)
{
	const char *s = getenv("WEFT_TEST_SCALE");
	unsigned long d = s ? strtoul(s, NULL, 10) : 1;
	if (d == 0)
		d = 1;
	return n / d ? n / d : 1;
}

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* The VmFlags of the mapping that holds p, from /proc/self/smaps. */
static bool vmflags_of(const void *p, char *flags, size_t len)
{
	FILE *f = fopen("/proc/self/smaps", "r");
	if (!f)
		return false;
	char line[512];
	bool inside = false, found = false;
	while (fgets(line, sizeof(line), f)) {
		unsigned long lo, hi;
		if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2 && strchr(line, '-') < strchr(line, ' ')) {
			inside = (uintptr_t)p >= lo && (uintptr_t)p < hi;
			continue;
		}
		if (inside && strncmp(line, "VmFlags:", 8) == 0) {
			snprintf(flags, len, "%.200s", line + 8);
			found = true;
			break;
		}
	}
	fclose(f);
	return found;
}

static bool has_flag(const char *flags, const char *flag)
{
	size_t n = strlen(flag);
	for (const char *s = flags; (s = strstr(s, flag)) != NULL; s += n)
		if ((s == flags || s[-1] == ' ') && (s[n] == ' ' || s[n] == '\n' || s[n] == 0))
			return true;
	return false;
}

Test(arena, node_alloc_aligned_zeroed_no_thp)
{
	const size_t page = (size_t)sysconf(_SC_PAGESIZE);
	const size_t two_mib = (size_t)2 << 20;
	const size_t sizes[] = { 1, page, ARENA_BLOCK_BYTES + 100, two_mib, 3 * two_mib + 5 };
	const int nodes[] = { -1, 0 };
	bool thp = access("/sys/kernel/mm/transparent_hugepage/enabled", F_OK) == 0;

	cr_assert_null(node_alloc(0, -1));
	for (unsigned ni = 0; ni < 2; ni++) {
		for (unsigned si = 0; si < sizeof(sizes) / sizeof(sizes[0]); si++) {
			size_t n = sizes[si];
			unsigned char *p = node_alloc(n, nodes[ni]);
			cr_assert_not_null(p, "node_alloc(%zu, %d)", n, nodes[ni]);
			cr_assert_eq((uintptr_t)p % page, 0);
			if (n >= two_mib)
				cr_assert_eq((uintptr_t)p % two_mib, 0, "%zu bytes not 2 MiB-aligned", n);
			size_t nonzero = 0;
			for (size_t i = 0; i < n; i++)
				nonzero += p[i] != 0;
			cr_assert_eq(nonzero, 0);
			/* The whole rounded range is ours to write. */
			size_t rounded = n >= two_mib ? (n + two_mib - 1) / two_mib * two_mib
						      : (n + page - 1) / page * page;
			memset(p, 0xa5, rounded);
			char flags[256];
			cr_assert(vmflags_of(p, flags, sizeof(flags)), "no smaps entry");
			if (thp)
				cr_assert(has_flag(flags, "nh"), "no MADV_NOHUGEPAGE: %s", flags);
			cr_assert_eq(madvise(p, rounded, MADV_NOHUGEPAGE), 0);
			node_free(p, n);
		}
	}
}

Test(arena, frames_distinct_aligned_and_tagged)
{
	struct weft_arena a;
	cr_assert_eq(arena_init(&a, 7, -1), 0);
	cr_assert_eq(a.nblocks, 1);
	/* The remote head alone on its line, after all the owner's fields. */
	cr_assert_eq(offsetof(struct weft_arena, remote) % 64, 0);
	cr_assert_geq(offsetof(struct weft_arena, remote), offsetof(struct weft_arena, id) + sizeof(a.id));
	cr_assert_eq(sizeof(struct weft_arena), offsetof(struct weft_arena, remote) + 64);
	enum { N = 3000 };
	struct weft_task **f = malloc(N * sizeof(*f));
	cr_assert_not_null(f);
	for (unsigned i = 0; i < N; i++) {
		f[i] = arena_alloc(&a);
		cr_assert_not_null(f[i]);
		cr_assert_eq((uintptr_t)f[i] % 64, 0);
		cr_assert_eq(f[i]->arena, 7);
		cr_assert_eq(f[i]->aux[0], 0, "a fresh frame is zeroed");
		f[i]->aux[0] = i + 1;
	}
	/* 3000 frames need three blocks of 1023. */
	cr_assert_eq(a.nblocks, 3);
	for (unsigned i = 0; i < N; i++)
		cr_assert_eq(f[i]->aux[0], i + 1, "frame %u overlaps another", i);
	/* Free in order, get them back in reverse (LIFO), no new block. */
	for (unsigned i = 0; i < N; i++)
		arena_free(&a, &a, f[i]);
	for (unsigned i = N; i-- > 0;) {
		struct weft_task *t = arena_alloc(&a);
		cr_assert_eq(t, f[i]);
		cr_assert_eq(t->arena, 7);
	}
	cr_assert_eq(a.nblocks, 3);
	free(f);
	arena_fini(&a);
	cr_assert_eq(a.nblocks, 0);
}

/* Frames carved from a so far (every block full but the current one). */
static size_t carved(const struct weft_arena *a)
{
	return a->nblocks * ARENA_BLOCK_FRAMES - (size_t)(a->bump_end - a->bump);
}

static int ptr_cmp(const void *l, const void *r)
{
	uintptr_t a = (uintptr_t)*(struct weft_task *const *)l, b = (uintptr_t)*(struct weft_task *const *)r;
	return a < b ? -1 : a > b;
}

/* Allocate from a until it would carve a new frame; every frame must be one
 * of want[0..n) and come back exactly once.  Returns how many came back, or
 * -1 on a stranger or a duplicate.  Marks are kept outside the frames: a
 * batch head's words hold its list.  Sorts want[]. */
static long drain_expect(struct weft_arena *a, struct weft_task **want, size_t n)
{
	qsort(want, n, sizeof(*want), ptr_cmp);
	bool *seen = calloc(n ? n : 1, sizeof(*seen));
	long got = 0;
	for (;;) {
		struct weft_task *before = a->bump;
		size_t blocks = a->nblocks;
		struct weft_task *t = arena_alloc(a);
		if (!t || !seen)
			break;
		if (a->bump != before || a->nblocks != blocks)
			break; /* carved: everything freed is back */
		struct weft_task **hit = bsearch(&t, want, n, sizeof(*want), ptr_cmp);
		if (!hit || seen[hit - want] || t->arena != a->id) {
			got = -1;
			break;
		}
		seen[hit - want] = true;
		got++;
	}
	free(seen);
	return got;
}

/* One thread freeing into another arena: the frames travel in batches of
 * up to 1 + ARENA_BATCH_LIST, one push per batch; the partial last batch
 * waits in the freer's slot until arena_flush.  Every frame comes back
 * once. */
Test(arena, remote_free_single_thread)
{
	enum { N = 100, FULL = 1 + ARENA_BATCH_LIST };
	struct weft_arena a, b;
	cr_assert_eq(arena_init(&a, 0, -1), 0);
	cr_assert_eq(arena_init(&b, 1, -1), 0);
	struct weft_task *f[N];
	for (unsigned i = 0; i < N; i++)
		f[i] = arena_alloc(&a);
	for (unsigned i = 0; i < N; i++)
		arena_free(&b, &a, f[i]);
	cr_assert_null(b.free);
	/* N / FULL full batches went out; each head is the batch's first
	 * frame and lists the rest in order. */
	unsigned batches = 0;
	for (struct weft_task *h = a.remote; h; h = h->next, batches++) {
		unsigned k = N / FULL - 1 - batches;
		cr_assert_eq(h, f[k * FULL], "batch %u head", k);
		cr_assert_eq(h->flags, ARENA_BATCH_LIST);
		for (unsigned i = 0; i < ARENA_BATCH_LIST; i++)
			cr_assert_eq(*batch_slot(h, i), f[k * FULL + 1 + i]);
		cr_assert_eq(h->arena, 0, "the head keeps its arena");
	}
	cr_assert_eq(batches, N / FULL);
	/* The rest waits in b's slot for a until the flush. */
	cr_assert_neq(b.pend_used, 0);
	cr_assert_eq(b.pend[0].owner, &a);
	cr_assert_eq(b.pend[0].n + 1, N % FULL);
	struct weft_task *old_head = a.remote;
	arena_flush(&b);
	cr_assert_eq(b.pend_used, 0);
	cr_assert_null(b.pend[0].owner);
	cr_assert_eq(a.remote->next, old_head, "the partial batch pushed on top");
	cr_assert_eq(a.remote->flags, N % FULL - 1);
	/* An empty flush pushes nothing. */
	arena_flush(&b);
	cr_assert_eq(a.remote->next, old_head);
	cr_assert_null(a.free);
	cr_assert_eq(drain_expect(&a, f, N), N);
	cr_assert_null(a.remote);
	cr_assert_null(a.batches);
	cr_assert_eq(a.nblocks, 1);
	arena_fini(&a);
	arena_fini(&b);
}

/* Two owners sharing one of the freer's slots (ids 1 and 1 +
 * ARENA_PEND_SLOTS), a third in another slot, and a thread that is no
 * worker (self NULL): alternating frees evict each other's batches from
 * the shared slot, nothing is lost or duplicated, and a NULL freer pushes
 * each frame at once. */
Test(arena, remote_free_slot_sharing_and_outside_thread)
{
	enum { N = 50 };
	struct weft_arena x, y, z, freer;
	cr_assert_eq(arena_init(&x, 1, -1), 0);
	cr_assert_eq(arena_init(&y, 1 + ARENA_PEND_SLOTS, -1), 0);
	cr_assert_eq(arena_init(&z, 2, -1), 0);
	cr_assert_eq(arena_init(&freer, 0, -1), 0);
	struct weft_task *fx[N], *fy[N], *fz[N];
	for (unsigned i = 0; i < N; i++) {
		fx[i] = arena_alloc(&x);
		fy[i] = arena_alloc(&y);
		fz[i] = arena_alloc(&z);
	}
	for (unsigned i = 0; i < N; i++) {
		arena_free(&freer, &x, fx[i]);
		arena_free(&freer, &y, fy[i]);
		arena_free(&freer, &z, fz[i]);
	}
	/* x and y took turns in slot 1: every batch is a single frame, and
	 * y's last one is still pending. */
	unsigned nx = 0, ny = 0;
	for (struct weft_task *h = x.remote; h; h = h->next, nx++)
		cr_assert_eq(h->flags, 0);
	for (struct weft_task *h = y.remote; h; h = h->next, ny++)
		cr_assert_eq(h->flags, 0);
	cr_assert_eq(nx, N);
	cr_assert_eq(ny, N - 1);
	cr_assert_eq(freer.pend[1].owner, &y);
	cr_assert_eq(freer.pend[2].owner, &z);
	arena_flush(&freer);
	cr_assert_null(freer.free);
	cr_assert_eq(drain_expect(&x, fx, N), N);
	cr_assert_eq(drain_expect(&y, fy, N), N);
	cr_assert_eq(drain_expect(&z, fz, N), N);

	/* Not a worker: a batch of one, pushed at once. */
	struct weft_task *t = arena_alloc(&x);
	arena_free(NULL, &x, t);
	cr_assert_eq(x.remote, t);
	cr_assert_eq(t->flags, 0);
	cr_assert_eq(arena_alloc(&x), t);
	arena_fini(&x);
	arena_fini(&y);
	arena_fini(&z);
	arena_fini(&freer);
}

Test(arena, flat_under_local_churn, .timeout = 120)
{
	struct weft_arena a;
	cr_assert_eq(arena_init(&a, 3, -1), 0);
	enum { BATCH = 1000 };
	struct weft_task *f[BATCH];
	unsigned long rounds = scaled(100000000) / BATCH;
	if (rounds == 0)
		rounds = 1;
	unsigned long bad = 0;
	for (unsigned long r = 0; r < rounds; r++) {
		for (unsigned i = 0; i < BATCH; i++) {
			f[i] = arena_alloc(&a);
			bad += f[i]->aux[0] != 0;
			f[i]->aux[0] = 1;
		}
		for (unsigned i = 0; i < BATCH; i++) {
			f[i]->aux[0] = 0;
			arena_free(&a, &a, f[i]);
		}
	}
	cr_assert_eq(bad, 0, "a live frame was handed out again");
	cr_assert_leq(a.nblocks, 2, "%zu blocks for %d live frames", a.nblocks, BATCH);
	arena_fini(&a);
}

/* Thread A allocates batches and hands them to threads B and C, which free
 * them back to A remotely (B the even slots, C the odd ones, so their CASes
 * on A's remote stack race).  At most INFLIGHT batches are in transit, so if
 * frames come back through the remote stack A's block count stays near
 * (INFLIGHT + 1) * BATCH / ARENA_BLOCK_FRAMES. */

enum { BATCH = 1000, INFLIGHT = 4, FREERS = 2, LIVE = 0x11fe };

struct pc {
	struct weft_arena a, freer_arena[FREERS];
	struct weft_task *batch[INFLIGHT][BATCH];
	uint64_t produced;         /* batches published by A */
	uint64_t consumed[FREERS]; /* batches finished by each freer */
	unsigned long batches;
	unsigned long errors_a, errors_freer[FREERS];
};

struct pc_arg {
	struct pc *s;
	unsigned id;
};

static void *pc_owner(void *p)
{
	struct pc *s = p;
	unsigned long errors = 0;
	uint64_t serial = 0;
	for (uint64_t k = 0; k < s->batches; k++) {
		unsigned spins = 0;
		for (unsigned f = 0; f < FREERS; f++)
			/* Pairs with the freer's store_release of consumed:
			 * the slot's previous batch has been read. */
			while (k - load_acquire(&s->consumed[f]) >= INFLIGHT)
				if (++spins > 64)
					yield_cpu();
		struct weft_task **slot = s->batch[k % INFLIGHT];
		for (unsigned i = 0; i < BATCH; i++) {
			struct weft_task *t = arena_alloc(&s->a);
			if (!t || t->aux[0] == LIVE || t->arena != s->a.id) {
				errors++;
				slot[i] = NULL;
				continue;
			}
			t->aux[0] = LIVE;
			t->aux[1] = serial++;
			slot[i] = t;
		}
		/* Pairs with the freers' load_acquire of produced. */
		store_release(&s->produced, k + 1);
	}
	s->errors_a = errors;
	return NULL;
}

static void *pc_freer(void *p)
{
	struct pc_arg *arg = p;
	struct pc *s = arg->s;
	unsigned long errors = 0;
	for (uint64_t k = 0; k < s->batches; k++) {
		unsigned spins = 0;
		/* Pairs with A's store_release of produced. */
		while (load_acquire(&s->produced) <= k)
			if (++spins > 64)
				yield_cpu();
		struct weft_task **slot = s->batch[k % INFLIGHT];
		for (unsigned i = arg->id; i < BATCH; i += FREERS) {
			struct weft_task *t = slot[i];
			if (!t)
				continue;
			if (t->aux[0] != LIVE || t->aux[1] != k * BATCH + i)
				errors++;
			t->aux[0] = 0;
			arena_free(&s->freer_arena[arg->id], &s->a, t);
		}
		/* Pairs with A's load_acquire of consumed. */
		store_release(&s->consumed[arg->id], k + 1);
	}
	/* Out of work: the partial batch goes home. */
	arena_flush(&s->freer_arena[arg->id]);
	s->errors_freer[arg->id] = errors;
	return NULL;
}

Test(arena, remote_free_keeps_owner_flat, .timeout = 120)
{
	struct pc *s = calloc(1, sizeof(*s));
	cr_assert_not_null(s);
	cr_assert_eq(arena_init(&s->a, 0, -1), 0);
	for (unsigned f = 0; f < FREERS; f++)
		cr_assert_eq(arena_init(&s->freer_arena[f], (uint16_t)(1 + f), -1), 0);
	s->batches = scaled(10000000) / BATCH;
	if (s->batches == 0)
		s->batches = 1;
	pthread_t ta, tf[FREERS];
	struct pc_arg args[FREERS];
	cr_assert_eq(pthread_create(&ta, NULL, pc_owner, s), 0);
	for (unsigned f = 0; f < FREERS; f++) {
		args[f].s = s;
		args[f].id = f;
		cr_assert_eq(pthread_create(&tf[f], NULL, pc_freer, &args[f]), 0);
	}
	pthread_join(ta, NULL);
	for (unsigned f = 0; f < FREERS; f++)
		pthread_join(tf[f], NULL);
	cr_assert_eq(s->errors_a, 0, "A was handed %lu live or foreign frames", s->errors_a);
	for (unsigned f = 0; f < FREERS; f++) {
		cr_assert_eq(s->errors_freer[f], 0, "freer %u saw %lu frames changed in flight",
			     f, s->errors_freer[f]);
		/* Remote frees only: nothing of A's in a freer's own list. */
		cr_assert_null(s->freer_arena[f].free);
		cr_assert_eq(s->freer_arena[f].nblocks, 1);
	}
	/* (INFLIGHT + 1) batches live at most, plus one block for frames
	 * freed after A's last look at its remote stack. */
	size_t limit = ((INFLIGHT + 1) * BATCH) / ARENA_BLOCK_FRAMES + 2;
	cr_assert_leq(s->a.nblocks, limit, "A has %zu blocks", s->a.nblocks);
	/* Every frame A ever carved is back (the freers flushed their partial
	 * batches), each exactly once. */
	size_t n = carved(&s->a);
	struct weft_task **all = malloc(n * sizeof(*all));
	cr_assert_not_null(all);
	size_t k = 0;
	for (struct weft_task *blk = s->a.blocks; blk; blk = blk->next)
		for (size_t i = 1; i <= ARENA_BLOCK_FRAMES && k < n; i++)
			if (blk + i < s->a.bump || blk + i >= s->a.bump_end)
				all[k++] = blk + i;
	cr_assert_eq(k, n);
	cr_assert_eq(drain_expect(&s->a, all, n), (long)n, "%zu frames carved", n);
	free(all);
	fprintf(stderr, "remote free: %lu frames through A, %zu blocks\n",
		s->batches * BATCH, s->a.nblocks);
	arena_fini(&s->a);
	for (unsigned f = 0; f < FREERS; f++)
		arena_fini(&s->freer_arena[f]);
	free(s);
}

/* Allocation failure: with the address space capped just above what is
 * mapped, the next block cannot be had.  Not under sanitizers, whose own
 * mappings need the room. */
Test(arena, out_of_memory_is_reported)
{
	if (UNDER_SANITIZER)
		cr_skip_test("RLIMIT_AS and sanitizer shadow memory do not mix");
	struct weft_arena a;
	cr_assert_eq(arena_init(&a, 2, -1), 0);
	unsigned long pages = 0;
	FILE *f = fopen("/proc/self/statm", "r");
	cr_assert_not_null(f);
	cr_assert_eq(fscanf(f, "%lu", &pages), 1);
	fclose(f);
	/* Criterion runs each test in its own process: the cap dies with it. */
	struct rlimit rl = { .rlim_cur = pages * (rlim_t)sysconf(_SC_PAGESIZE) + 16384 };
	rl.rlim_max = RLIM_INFINITY;
	cr_assert_eq(setrlimit(RLIMIT_AS, &rl), 0);
	unsigned got = 0;
	while (arena_alloc(&a) != NULL)
		got++;
	cr_assert_eq(got, ARENA_BLOCK_FRAMES, "the first block only");
	cr_assert_eq(a.nblocks, 1);
	struct weft_arena b;
	cr_assert_eq(arena_init(&b, 3, -1), -ENOMEM);
	cr_assert_null(node_alloc(ARENA_BLOCK_BYTES, -1));
	arena_fini(&a);
}

/* Cost of an alloc+free pair on one thread: LIFO (the frame just freed is
 * the next one allocated) and in batches of 1000. */
Test(arena, pair_cost)
{
	struct weft_arena a;
	cr_assert_eq(arena_init(&a, 4, -1), 0);
	unsigned long n = scaled(50000000);
	struct weft_task *f[1000];
	uint64_t sum = 0;
	uint64_t t0 = now_ns();
	for (unsigned long i = 0; i < n; i++) {
		struct weft_task *t = arena_alloc(&a);
		/* Keep the pair from being optimised into nothing. */
		sum += (uintptr_t)t;
		arena_free(&a, &a, t);
	}
	uint64_t t1 = now_ns();
	for (unsigned long r = 0; r < n / 1000; r++) {
		for (unsigned i = 0; i < 1000; i++)
			f[i] = arena_alloc(&a);
		for (unsigned i = 0; i < 1000; i++)
			arena_free(&a, &a, f[i]);
	}
	uint64_t t2 = now_ns();
	cr_assert_neq(sum, 0);
	cr_assert_eq(a.nblocks, 1);
	fprintf(stderr, "arena alloc+free pair: %.2f ns LIFO, %.2f ns in batches of 1000\n",
		(double)(t1 - t0) / (double)n, (double)(t2 - t1) / (double)(n / 1000 * 1000));
	arena_fini(&a);
}
